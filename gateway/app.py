"""The gateway app: one gRPC channel to the RAG service, middleware, routes and the chat page."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware import Middleware
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from grpc_health.v1 import health_pb2_grpc
from starlette.middleware.cors import CORSMiddleware

from gateway import errors
from gateway.metrics import Metrics, MetricsMiddleware
from gateway.middleware import REQUEST_ID_HEADER, BearerAuthMiddleware, BodyLimitMiddleware, RequestIdMiddleware
from gateway.routes import answer, feedback, health, openai_compat
from gateway.settings import Settings
from llmtwin.rag.v1 import rag_service_pb2_grpc
from servekit.auth import BearerTokens, client_interceptors
from servekit.channels import client_channel
from servekit.tls import ClientTls

STATIC_DIR = Path(__file__).parent / "static"


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the gateway for these settings; the lifespan opens and closes the channel to the RAG service."""
    settings = settings or Settings()
    metrics = Metrics()
    rag_tls = ClientTls(
        settings.rag_tls,
        settings.rag_tls_ca_file,
        settings.rag_tls_cert_file,
        settings.rag_tls_key_file,
        settings.rag_tls_server_name,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Round robin over every RAG replica the target resolves to, UNAVAILABLE retried before a stream starts.
        channel = client_channel(
            settings.rag_target, tls=rag_tls, interceptors=client_interceptors(settings.rag_auth_token)
        )
        app.state.rag_channel = channel
        app.state.rag_stub = rag_service_pb2_grpc.RagServiceStub(channel)
        app.state.health_stub = health_pb2_grpc.HealthStub(channel)
        try:
            yield
        finally:
            await channel.close(grace=None)

    # First listed is outermost: every response (a 413 too) gets its request id, is counted, and has CORS headers.
    middleware = [
        Middleware(RequestIdMiddleware),
        Middleware(MetricsMiddleware, metrics=metrics),
    ]
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST", "OPTIONS"],
                allow_headers=["content-type", "authorization", REQUEST_ID_HEADER],
                expose_headers=[REQUEST_ID_HEADER],
            )
        )
    # Inside CORS so that preflights pass and refusals carry CORS headers; before the body is read.
    if settings.auth_tokens:
        middleware.append(
            Middleware(
                BearerAuthMiddleware, tokens=BearerTokens(settings.auth_tokens), open_health=settings.auth_open_health
            )
        )
    middleware.append(Middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes))

    app = FastAPI(title="LLM Twin gateway", version="1", lifespan=lifespan, middleware=middleware)
    app.state.settings = settings
    app.state.metrics = metrics
    errors.install(app)
    app.include_router(answer.build_router(settings.max_query_chars, settings.max_history_turns))
    app.include_router(openai_compat.build_router(settings.max_query_chars))
    app.include_router(feedback.router)
    app.include_router(health.router)
    app.add_route("/metrics", metrics.endpoint, methods=["GET"], include_in_schema=False)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        """The chat page."""
        return FileResponse(STATIC_DIR / "index.html")

    return app
