"""The gateway app served by a real uvicorn server on a loopback port, pointed at a given RAG service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn

from gateway.app import create_app
from gateway.settings import Settings


@asynccontextmanager
async def serving(app: Any, *, url_host: str = "127.0.0.1", **options: Any) -> AsyncIterator[str]:
    """Runs an ASGI app under a real uvicorn server on a loopback port and yields its base URL (https when
    `options` carry a certificate; `url_host` is the name in the URL, e.g. the one a certificate is for)."""
    defaults = dict(host="127.0.0.1", port=0, log_level="warning", lifespan="on", timeout_graceful_shutdown=1)
    server = uvicorn.Server(uvicorn.Config(app, **(defaults | options)))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # startup failed: raise its error
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    scheme = "https" if options.get("ssl_certfile") else "http"
    try:
        yield f"{scheme}://{url_host}:{port}"
    finally:
        server.should_exit = True
        await task


@asynccontextmanager
async def serving_gateway(rag_target: str, **overrides: object) -> AsyncIterator[str]:
    """Runs the gateway (real HTTP, so disconnects are real) and yields its base URL."""
    settings = Settings(rag_target=rag_target, **overrides)  # type: ignore[arg-type]
    async with serving(create_app(settings)) as url:
        yield url
