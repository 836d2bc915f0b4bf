"""FastAPI dependencies: the RAG stub, settings and metrics held in app.state, and the request id."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from grpc_health.v1 import health_pb2_grpc
from pydantic import BaseModel

from gateway.metrics import Metrics
from gateway.middleware import REQUEST_ID_HEADER, new_request_id
from gateway.settings import Settings
from llmtwin.rag.v1 import rag_service_pb2_grpc


def get_stub(request: Request) -> rag_service_pb2_grpc.RagServiceStub:
    """The RAG service stub opened by the lifespan."""
    return request.app.state.rag_stub


def get_health_stub(request: Request) -> health_pb2_grpc.HealthStub:
    """The grpc.health.v1 stub on the same channel."""
    return request.app.state.health_stub


def get_settings(request: Request) -> Settings:
    """The app's settings."""
    return request.app.state.settings


def get_metrics(request: Request) -> Metrics:
    """The app's metrics."""
    return request.app.state.metrics


def adopt_request_id(request: Request, given: str = "") -> str:
    """The request's id: the one given in the body if any, else the middleware's; returned as x-request-id."""
    request_id = given or getattr(request.state, "request_id", "") or new_request_id()
    request.state.request_id = request_id
    return request_id


def rpc_metadata(request_id: str) -> tuple[tuple[str, str], ...]:
    """gRPC metadata for a RAG call: the request id's one carrier to the RAG service (not the request's field)."""
    return ((REQUEST_ID_HEADER, request_id),)


E = TypeVar("E", bound=Callable[..., Coroutine[Any, Any, Any]])


def with_body(endpoint: E, model: type[BaseModel]) -> E:
    """A copy of `endpoint` whose `body` parameter FastAPI validates (and documents) as `model`: request models
    depend on settings (the query length limit), the endpoints do not."""

    @functools.wraps(endpoint)
    async def bound(*args: Any, **kwargs: Any) -> Any:
        return await endpoint(*args, **kwargs)

    signature = inspect.signature(endpoint, eval_str=True)
    parameters = [p.replace(annotation=model) if p.name == "body" else p for p in signature.parameters.values()]
    bound.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    return bound  # type: ignore[return-value]


Stub = Annotated[rag_service_pb2_grpc.RagServiceStub, Depends(get_stub)]
HealthStub = Annotated[health_pb2_grpc.HealthStub, Depends(get_health_stub)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
