"""GET /healthz (the process runs) and GET /readyz (the RAG service reports SERVING)."""

from __future__ import annotations

import grpc
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from grpc_health.v1 import health_pb2

from gateway.deps import HealthStub, SettingsDep

router = APIRouter(tags=["health"])

RAG_SERVICE_NAME = "llmtwin.rag.v1.RagService"


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: 200 whenever the process serves HTTP."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(health: HealthStub, settings: SettingsDep) -> JSONResponse:
    """Readiness: 200 when the RAG service's grpc.health.v1 Check says SERVING, else 503."""
    try:
        reply = await health.Check(
            health_pb2.HealthCheckRequest(service=RAG_SERVICE_NAME), timeout=settings.ready_timeout_s
        )
    except grpc.aio.AioRpcError as exc:
        # NOT_FOUND: the server answers but does not register the RagService's health.
        status = "SERVICE_UNKNOWN" if exc.code() == grpc.StatusCode.NOT_FOUND else "UNREACHABLE"
        body = {"status": status, "rag_target": settings.rag_target, "detail": exc.code().name}
        return JSONResponse(body, status_code=503)
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return JSONResponse(
        {"status": status, "rag_target": settings.rag_target},
        status_code=200 if reply.status == health_pb2.HealthCheckResponse.SERVING else 503,
    )
