"""Retries happen at one hop, within a budget (servekit/channels.py, docs/reliability.md "Retries").

The chain is real: the gateway (uvicorn, its own servekit channel) → a RAG service → a small grpc.aio server
standing in for the LLM service. The stand-in describes its model and counts tokens, but fails every
generation UNAVAILABLE the way a replica going away does (no handler of ours answering, so no pushback). The
attempts it sees are what an outage costs the backend.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import httpx
import pytest

from llm_service import convert
from llm_service.backends.echo import EchoBackend
from llmtwin.llm.v1 import llm_service_pb2 as llm_pb
from llmtwin.llm.v1 import llm_service_pb2_grpc as llm_grpc
from rag_service.embedding import Embedder
from tests.support.gateway import serving_gateway
from tests.support.rag import corpus, running_rag

pytestmark = pytest.mark.asyncio(loop_scope="session")

DOCS = [d for d in corpus() if d.id.endswith("-001")][:3]
CALLS = 6


class DownLlm(llm_grpc.LlmServiceServicer):
    """Answers GetModelInfo and CountTokens; every Generate / GenerateStream attempt is counted and refused."""

    def __init__(self) -> None:
        self.generations = 0
        self.info = convert.model_info_to_proto(EchoBackend().info(), 4)

    async def GetModelInfo(self, request: llm_pb.GetModelInfoRequest, context: grpc.aio.ServicerContext) -> object:
        """The echo backend's model and limits."""
        return self.info

    async def CountTokens(self, request: llm_pb.CountTokensRequest, context: grpc.aio.ServicerContext) -> object:
        """A word count is enough here."""
        text = request.prompt or " ".join(m.content for m in request.messages.messages)
        return llm_pb.CountTokensResponse(token_count=len(text.split()))

    async def Generate(self, request: llm_pb.GenerateRequest, context: grpc.aio.ServicerContext) -> object:
        """Counted, then UNAVAILABLE."""
        self.generations += 1
        await context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset")
        raise AssertionError("unreachable: abort raises")

    async def GenerateStream(  # type: ignore[override]
        self, request: llm_pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[llm_pb.GenerateStreamResponse]:
        """Counted, then UNAVAILABLE before any message."""
        self.generations += 1
        await context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset")
        yield llm_pb.GenerateStreamResponse()  # unreachable: an async generator like the real one


@asynccontextmanager
async def down_llm() -> AsyncIterator[tuple[DownLlm, str]]:
    servicer = DownLlm()
    server = grpc.aio.server()
    llm_grpc.add_LlmServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


@pytest.mark.parametrize("route", ["/v1/answer", "/v1/answer/stream"])
async def test_an_llm_outage_costs_one_hops_retries_then_one_attempt_a_request(embedder: Embedder, route: str) -> None:
    # Pre-retrieval steps off: each answer then makes exactly one generation call to the LLM service.
    async with (
        down_llm() as (llm, llm_target),
        running_rag(llm_target, embedder, expand_queries=0, self_query=False) as rag,
        serving_gateway(f"127.0.0.1:{rag.port}", request_timeout_s=30) as url,
        httpx.AsyncClient(base_url=url, timeout=60) as http,
    ):
        await rag.ingest(DOCS)
        statuses, attempts = [], []
        for i in range(CALLS):
            before = llm.generations
            response = await http.post(route, json={"query": f"What is a KV cache? ({i})"})
            text = response.text
            statuses.append(503 if response.status_code == 503 or '"UNAVAILABLE"' in text else response.status_code)
            attempts.append(llm.generations - before)

    assert statuses == [503] * CALLS  # every request failed, as it must while the LLM is down
    # The RAG service's channel retried the first failures (3 attempts each) until its budget ran low (the
    # successful GetModelInfo / CountTokens calls on the channel give some of it back, so the second request
    # may get 2 or 3); the gateway retried none of them: the RAG service's UNAVAILABLE carries the no-retry
    # pushback. Before: every request cost 3 × 3 = 9 generations.
    assert attempts[0] == 3
    assert max(attempts) == 3
    assert attempts[-3:] == [1, 1, 1]
