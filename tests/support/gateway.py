"""The gateway app served by a real uvicorn server on a loopback port, pointed at a given RAG service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn

from gateway.app import create_app
from gateway.settings import Settings


@asynccontextmanager
async def serving_gateway(rag_target: str, **overrides: object) -> AsyncIterator[str]:
    """Runs the gateway (real HTTP, so disconnects are real) and yields its base URL."""
    settings = Settings(rag_target=rag_target, **overrides)  # type: ignore[arg-type]
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=0, log_level="warning", lifespan="on", timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # startup failed: raise its error
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
