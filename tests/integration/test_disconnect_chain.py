"""The whole chain (echo LLM at 10 ms a token, RAG service, gateway under uvicorn): an HTTP client that leaves a
non-streaming route while the answer is generated cancels the generation, which the LLM service counts as a
CANCELLED GenerateStream (llm_requests_total), and its slot is freed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
import pytest_asyncio

from llm_service import metrics as llm_metrics
from llm_service.backends.echo import EchoBackend
from tests.support.gateway import serving_gateway
from tests.support.llm import RunningLlm, running_llm, stopped_producing
from tests.support.rag import RunningRag, corpus, running_rag

pytestmark = pytest.mark.asyncio(loop_scope="session")

QUESTION = "What does Elena Varga think about batching?"
WAIT_S = 30.0  # generous poll deadline; an uncancelled answer runs 10 s and ends OK, not CANCELLED


@dataclass
class Chain:
    """LLM (10 ms a token), RAG with a few documents, and a gateway with a 120 s deadline."""

    backend: EchoBackend
    llm: RunningLlm
    rag: RunningRag
    url: str


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def chain(embedder) -> AsyncIterator[Chain]:  # type: ignore[no-untyped-def]
    """The chain, shared by the tests below (each leaves nothing in flight)."""
    backend = EchoBackend(token_delay_s=0.01)
    async with (
        running_llm(backend) as llm,
        running_rag(llm.target, embedder) as rag,
        serving_gateway(f"127.0.0.1:{rag.port}", request_timeout_s=120) as url,
    ):
        await rag.ingest([d for d in corpus() if d.id.endswith("-001")][:6])
        yield Chain(backend, llm, rag, url)


def generations(code: str) -> float:
    """GenerateStream calls the LLM service counted with this status code."""
    for metric in llm_metrics.REQUESTS.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.labels == {"method": "GenerateStream", "code": code}:
                return sample.value
    return 0.0


async def poll(condition: object, what: str) -> None:
    """Waits until `condition()` holds; fails after WAIT_S."""
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while not condition():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.02)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/answer", {"query": QUESTION, "parameters": {"max_new_tokens": 1000}}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": QUESTION}], "max_tokens": 1000}),
    ],
)
async def test_a_client_leaving_a_non_streaming_answer_cancels_the_generation(
    chain: Chain, path: str, body: dict[str, object]
) -> None:
    cancelled, ok, produced = generations("CANCELLED"), generations("OK"), chain.backend.produced
    url = urlsplit(chain.url)
    _reader, writer = await asyncio.open_connection(url.hostname, url.port)
    payload = json.dumps(body).encode()
    head = f"POST {path} HTTP/1.1\r\nhost: {url.netloc}\r\ncontent-type: application/json\r\n"
    writer.write(f"{head}content-length: {len(payload)}\r\n\r\n".encode() + payload)
    await writer.drain()
    await poll(lambda: chain.backend.produced > produced, "the generation never started")

    writer.close()  # the client leaves while tokens are generated
    await writer.wait_closed()

    await poll(lambda: generations("CANCELLED") == cancelled + 1, "the LLM service saw no CANCELLED generation")
    assert generations("OK") == ok
    tokens = await stopped_producing(chain.backend, chain.llm.server.admission, chain.rag.server.admission)
    assert tokens - produced < 1000
