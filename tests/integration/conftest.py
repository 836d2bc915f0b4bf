"""Fixtures shared by the integration tests: one embedding model per test session."""

from __future__ import annotations

import pytest_asyncio

from rag_service.embedding import Embedder


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def embedder():
    """The real all-MiniLM-L6-v2 embedder, loaded once."""
    model = await Embedder.open(threads=1)
    yield model
    await model.aclose()
