"""Fixtures: a FakeRag gRPC server, the gateway app pointed at it, an in-process client and a real uvicorn server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

import httpx
import pytest
from fastapi import FastAPI

from gateway.app import create_app
from gateway.settings import Settings
from tests.support.fake_rag import FakeRag, FakeRagServer, serve_fake_rag
from tests.support.gateway import serving


@pytest.fixture
def fake() -> FakeRag:
    """The RAG test double; tests turn its knobs (delay_s, fail) before calling the gateway."""
    return FakeRag()


@pytest.fixture
async def rag(fake: FakeRag) -> AsyncIterator[FakeRagServer]:
    """The FakeRag served on a loopback port."""
    async with serve_fake_rag(fake) as running:
        yield running


@pytest.fixture
def settings(rag: FakeRagServer) -> Settings:
    """Gateway settings pointed at the fake."""
    return Settings(rag_target=rag.target, request_timeout_s=10)


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    """A fresh gateway app."""
    return create_app(settings)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client (ASGI transport) with the app's lifespan running."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as http:
            yield http


@pytest.fixture
def serve() -> Callable[[FastAPI], AbstractAsyncContextManager[str]]:
    """Runs an app under a real uvicorn server on a loopback port: `async with serve(app) as base_url`."""
    return serving


@pytest.fixture
async def base_url(app: FastAPI) -> AsyncIterator[str]:
    """The gateway app served by uvicorn; its base URL."""
    async with serving(app) as url:
        yield url
