"""GET /healthz (the process runs) and GET /readyz (the RAG service can serve), capability by capability."""

from __future__ import annotations

import asyncio

import grpc
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from grpc_health.v1 import health_pb2

from gateway.deps import HealthStub, SettingsDep

router = APIRouter(tags=["health"])

RAG_SERVICE_NAME = "llmtwin.rag.v1.RagService"
# The RAG service's health names per capability: retrieval (the service's own name) and answering.
CAPABILITIES = {"retrieve": RAG_SERVICE_NAME, "answer": f"{RAG_SERVICE_NAME}/Answer"}


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: 200 whenever the process serves HTTP."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(health: HealthStub, settings: SettingsDep) -> JSONResponse:
    """Readiness: 200 while the RAG service can retrieve (its grpc.health.v1 status SERVING), else 503.

    The body says each capability's status: `answer` also needs the LLM service, and an LLM outage leaves the
    gateway ready (the page loads, answer routes say 503 with the reason) rather than out of its Service.
    """

    async def check(service: str) -> str:
        try:
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=settings.ready_timeout_s)
        except grpc.aio.AioRpcError as exc:
            # NOT_FOUND: the server answers but does not register this health name.
            return "SERVICE_UNKNOWN" if exc.code() == grpc.StatusCode.NOT_FOUND else "UNREACHABLE"
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

    statuses = dict(zip(CAPABILITIES, await asyncio.gather(*map(check, CAPABILITIES.values())), strict=True))
    status = statuses["retrieve"]
    body = {"status": status, "capabilities": statuses, "rag_target": settings.rag_target}
    return JSONResponse(body, status_code=200 if status == "SERVING" else 503)
