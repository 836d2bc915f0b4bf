"""Wiring of the LLM service: backend, admission, servicer, health, reflection, metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from llm_service import metrics
from llm_service.backends.base import Backend
from llm_service.backends.factory import make_backend
from llm_service.errors import DOMAIN
from llm_service.generation import Generator
from llm_service.servicer import LlmServicer
from llm_service.settings import Settings
from llmtwin.llm.v1 import llm_service_pb2, llm_service_pb2_grpc
from servekit.admission import Admission
from servekit.grpc_app import secured_app, watch_health

log = logging.getLogger(__name__)
SERVICE_NAME = llm_service_pb2.DESCRIPTOR.services_by_name["LlmService"].full_name


class LlmServer:
    """The LLM service: start() binds and loads the backend, stop() drains and unloads it."""

    def __init__(self, settings: Settings, backend: Backend | None = None):
        self.settings = settings
        self.backend = backend or make_backend(settings)
        self.admission = Admission(settings.max_concurrent, settings.max_queued, settings.queue_timeout_s)
        metrics.IN_FLIGHT.set_function(lambda: self.admission.in_flight)
        metrics.QUEUED.set_function(lambda: self.admission.waiting)
        self.app, self.tls = secured_app(SERVICE_NAME, DOMAIN, settings)
        servicer = LlmServicer(Generator(self.backend, self.admission), settings)
        llm_service_pb2_grpc.add_LlmServiceServicer_to_server(servicer, self.app.server)
        self._health_task: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Listens first (health answers NOT_SERVING while loading), then loads the backend."""
        credentials = await asyncio.to_thread(self.tls.grpc_credentials)
        port = await self.app.start(self.settings.host, self.settings.port, credentials)
        log.info(
            "listening",
            extra={
                "address": f"{self.settings.host}:{port}",
                "backend": self.settings.backend,
                "tls": "mutual" if self.tls.mutual else self.tls.enabled,
                "auth": bool(self.settings.auth_tokens),
            },
        )
        await self.backend.start()
        self._health_task = asyncio.create_task(
            watch_health(self.app, self.backend.check_health, self.settings.health_interval_s)
        )
        return port

    async def stop(self) -> None:
        """NOT_SERVING, stop accepting, let in-flight streams finish within the grace period, unload."""
        if self._health_task:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
        await self.app.stop(self.settings.shutdown_grace_s, self.settings.shutdown_drain_s)
        await self.backend.aclose()
