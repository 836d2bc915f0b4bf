"""Wiring of the LLM service: backend, admission, servicer, health, reflection, metrics."""

from __future__ import annotations

from typing import Any

from llm_service import metrics
from llm_service.backends.base import Backend
from llm_service.backends.factory import make_backend
from llm_service.errors import DOMAIN
from llm_service.generation import Generator
from llm_service.servicer import LlmServicer
from llm_service.settings import Settings
from llmtwin.llm.v1 import llm_service_pb2, llm_service_pb2_grpc
from servekit.service import GrpcService

SERVICE_NAME = llm_service_pb2.DESCRIPTOR.services_by_name["LlmService"].full_name


class LlmServer(GrpcService[Settings]):
    """The LLM service: start() binds and loads the backend, stop() drains and unloads it."""

    def __init__(self, settings: Settings, backend: Backend | None = None):
        super().__init__(settings, SERVICE_NAME, DOMAIN)
        self.backend = backend or make_backend(settings)
        metrics.IN_FLIGHT.set_function(lambda: self.admission.in_flight)
        metrics.QUEUED.set_function(lambda: self.admission.waiting)
        servicer = LlmServicer(Generator(self.backend, self.admission), settings)
        llm_service_pb2_grpc.add_LlmServiceServicer_to_server(servicer, self.app.server)

    async def load(self) -> None:
        """Loads the backend once listening: health answers NOT_SERVING meanwhile."""
        await self.backend.start()

    async def check_health(self) -> bool:
        """Whether the backend answers."""
        return await self.backend.check_health()

    async def close(self) -> None:
        """Unloads the backend."""
        await self.backend.aclose()

    def describe(self) -> dict[str, Any]:
        """The backend, in the "listening" log line."""
        return {"backend": self.settings.backend}

    def ready_fields(self) -> dict[str, Any]:
        """The model, in the "ready" log line."""
        return {"model": self.backend.info().model_id}
