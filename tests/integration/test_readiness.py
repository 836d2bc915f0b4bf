"""Readiness per capability across the chain: an LLM outage keeps the RAG service and the gateway in rotation
(retrieval works), while the routes that need the LLM answer 503 / UNAVAILABLE with the reason."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.support.gateway import serving_gateway
from tests.support.procs import free_port
from tests.support.rag import corpus, running_rag

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_an_llm_outage_keeps_the_gateway_ready_and_answers_503_with_the_reason(embedder) -> None:
    async with (
        running_rag(f"127.0.0.1:{free_port()}", embedder) as rag,  # no LLM service listens there
        serving_gateway(f"127.0.0.1:{rag.port}") as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        await rag.ingest(corpus(limit=3))
        deadline = asyncio.get_running_loop().time() + 10
        while (ready := await http.get("/readyz")).status_code != 200:
            assert asyncio.get_running_loop().time() < deadline, ready.text
            await asyncio.sleep(0.05)
        assert ready.json()["capabilities"] == {"retrieve": "SERVING", "answer": "NOT_SERVING"}
        answer = await http.post("/v1/answer", json={"query": "What is a KV cache?"})
        assert answer.status_code == 503
        error = answer.json()["error"]
        assert error["status"] == "UNAVAILABLE" and error["reason"] == "LLM_UNAVAILABLE"
        assert "LLM service" in error["message"]
