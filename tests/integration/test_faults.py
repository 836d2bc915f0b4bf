"""Faults over real gRPC and HTTP on loopback: each ends in the right status for its caller, frees what it held,
and the services keep serving the next request.

LLM service (echo backend, tokens slowed where a test needs time), RAG service (in-memory store) and the
gateway (uvicorn) run in this process on their own ports; services are stopped and started again on the same
port to play a restart.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import grpc
import httpx
import pytest
import pytest_asyncio

from llm_service.backends.echo import EchoBackend
from llm_service.server import LlmServer
from llm_service.settings import Settings as LlmSettings
from llmtwin.llm.v1 import llm_service_pb2 as llm_pb
from llmtwin.rag.v1 import rag_service_pb2 as pb
from servekit.errors import error_reason
from tests.support.fake_opik import running_fake_opik
from tests.support.gateway import serving_gateway
from tests.support.llm import RunningLlm, running_llm, stopped_producing
from tests.support.procs import free_port
from tests.support.rag import RunningRag, corpus, running_rag

pytestmark = pytest.mark.asyncio(loop_scope="session")

DOCS = [d for d in corpus() if d.id.endswith("-001")][:6]
LONG = llm_pb.GenerationParameters(max_new_tokens=1000)  # 10 s at 10 ms a token: only a fault ends it early
QUESTION = "What does Elena Varga think about batching?"


def answer_request(parameters: llm_pb.GenerationParameters | None = None) -> pb.AnswerRequest:
    return pb.AnswerRequest(query=QUESTION, parameters=parameters or llm_pb.GenerationParameters(max_new_tokens=8))


@asynccontextmanager
async def llm_on_port(port: int, backend: EchoBackend, **overrides: object) -> AsyncIterator[LlmServer]:
    """An LLM service on a fixed port (a restart must come back where the RAG service dials)."""
    options: dict[str, object] = {
        "port": port,
        "metrics_port": 0,
        "health_interval_s": 0.2,
        "shutdown_grace_s": 0.5,
        "shutdown_drain_s": 0,
    }
    server = LlmServer(LlmSettings(**(options | overrides)), backend)  # type: ignore[arg-type]
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def eventually_ok(call: object, timeout_s: float = 30.0) -> float:
    """Repeats an awaitable factory until it succeeds; the seconds it took. Fails after timeout_s."""
    start = time.monotonic()
    while True:
        try:
            await call()  # type: ignore[operator]
            return time.monotonic() - start
        except (grpc.aio.AioRpcError, AssertionError):
            if time.monotonic() - start > timeout_s:
                raise
            await asyncio.sleep(0.2)


async def read_to_end(call: grpc.aio.UnaryStreamCall) -> pb.AnswerStreamResponse:
    """Reads a stream already read from with read() to its end; its last message."""
    last = None
    while (message := await call.read()) is not grpc.aio.EOF:
        last = message
    assert last is not None
    return last


# ---- a dependency going away ------------------------------------------------------------------------------


@pytest.mark.slow
async def test_llm_restart_mid_stream_is_unavailable_then_rag_reconnects_by_itself(embedder) -> None:
    port = free_port()
    backend = EchoBackend(token_delay_s=0.01)

    async with running_rag(f"127.0.0.1:{port}", embedder) as rag:

        async def answered() -> None:
            assert (await rag.stub.Answer(answer_request(), timeout=30)).final.usage.completion_tokens == 8

        await rag.ingest(DOCS)
        async with llm_on_port(port, backend):  # the LLM service was down when the RAG service started
            await eventually_ok(answered, timeout_s=15)
            stream = rag.stub.AnswerStream(answer_request(LONG), timeout=60)
            assert (await stream.read()).HasField("context")
            assert (await stream.read()).HasField("delta")
        # the LLM service stopped (grace 0.5 s) under a 10 s stream: the stream fails cleanly, not INTERNAL
        with pytest.raises(grpc.aio.AioRpcError) as mid:
            while await stream.read() is not grpc.aio.EOF:
                pass
        assert mid.value.code() == grpc.StatusCode.UNAVAILABLE, mid.value
        assert error_reason(mid.value) == "LLM_UNAVAILABLE"
        assert rag.server.admission.in_flight == 0
        # down: UNAVAILABLE at once, retrieval keeps working
        with pytest.raises(grpc.aio.AioRpcError) as down:
            await rag.stub.Answer(answer_request(), timeout=30)
        assert down.value.code() == grpc.StatusCode.UNAVAILABLE and error_reason(down.value) == "LLM_UNAVAILABLE"
        assert (await rag.stub.Retrieve(pb.RetrieveRequest(query=QUESTION), timeout=30)).context.documents
        await asyncio.sleep(1.0)  # a real outage: the channel backs off between reconnection attempts
        # back on the same port: the RAG service's channel reconnects without a restart
        async with llm_on_port(port, EchoBackend()):
            await eventually_ok(answered, timeout_s=15)  # reconnect backoff is capped at 2 s (servekit.channels)


@pytest.mark.slow
async def test_rag_restart_is_503_at_the_gateway_then_it_serves_again(embedder) -> None:
    rag_port = free_port()
    body = {"query": QUESTION, "parameters": {"max_new_tokens": 4}}
    async with (
        running_llm(EchoBackend()) as llm,
        serving_gateway(f"127.0.0.1:{rag_port}", request_timeout_s=30) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        async with running_rag(llm.target, embedder, port=rag_port) as rag:
            await rag.ingest(DOCS)
            assert (await http.post("/v1/answer", json=body)).status_code == 200
        down = await http.post("/v1/answer", json=body)
        assert down.status_code == 503 and down.json()["error"]["status"] == "UNAVAILABLE"
        stream_down = await http.post("/v1/answer/stream", json=body)
        assert stream_down.status_code == 503
        assert (await http.get("/readyz")).status_code == 503
        async with running_rag(llm.target, embedder, port=rag_port) as rag:
            await rag.ingest(DOCS)

            async def answered() -> None:
                response = await http.post("/v1/answer", json=body)
                assert response.status_code == 200, response.text

            await eventually_ok(answered)


@pytest.mark.parametrize(("delay_s", "status"), [(2.0, None), (0.0, 500)], ids=["slow", "erroring"])
async def test_slow_or_failing_opik_never_delays_or_fails_an_answer(
    embedder, monkeypatch: pytest.MonkeyPatch, delay_s: float, status: int | None
) -> None:
    from rag_service.opik_export import OpikTracer
    from rag_service.opik_sdk import OpikSettings

    with running_fake_opik(delay_s=delay_s, status=status) as opik:
        monkeypatch.setenv("OPIK_DEFAULT_FLUSH_TIMEOUT", "1")
        monkeypatch.delenv("OPIK_TRACK_DISABLE", raising=False)
        settings = OpikSettings(host=opik.url, api_key="test-key", workspace="default", project_name="faults")
        tracer = OpikTracer(settings, sample_rate=1.0, buffer_size=2, flush_timeout_s=0.5)
        async with running_llm(EchoBackend()) as llm, running_rag(llm.target, embedder, tracer=tracer) as rag:
            await rag.ingest(DOCS)
            for _ in range(6):  # more than the buffer holds
                start = time.monotonic()
                answer = await rag.stub.Answer(answer_request(), timeout=30)
                assert answer.final.usage.completion_tokens == 8 and answer.final.trace_id
                assert time.monotonic() - start < delay_s / 2 or delay_s == 0  # never waits for Opik
            assert opik.wait_for_request("/batch", timeout_s=10)  # export was tried, and failed or hung
            stop_started = time.monotonic()
        assert time.monotonic() - stop_started < 15  # closing the tracer is bounded too


# ---- deadlines and cancellation end the whole chain ---------------------------------------------------------


@dataclass
class SlowChain:
    """LLM (10 ms a token), RAG with DOCS, and two gateways: one with a 1.5 s deadline, one with 60 s."""

    backend: EchoBackend
    llm: RunningLlm
    rag: RunningRag
    short: httpx.AsyncClient
    long: httpx.AsyncClient

    async def stopped(self, before: int) -> int:
        """Waits until the generation stopped everywhere; the tokens produced since `before`."""
        produced = await stopped_producing(self.backend, self.llm.server.admission, self.rag.server.admission)
        return produced - before


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def slow(embedder) -> AsyncIterator[SlowChain]:
    """A chain shared by the deadline and cancellation tests (each leaves nothing in flight)."""
    backend = EchoBackend(token_delay_s=0.01)
    async with (
        running_llm(backend) as llm,
        running_rag(llm.target, embedder) as rag,
        serving_gateway(f"127.0.0.1:{rag.port}", request_timeout_s=1.5) as short_url,
        serving_gateway(f"127.0.0.1:{rag.port}", request_timeout_s=60) as long_url,
        httpx.AsyncClient(base_url=short_url, timeout=30) as short,
        httpx.AsyncClient(base_url=long_url, timeout=30) as long,
    ):
        await rag.ingest(DOCS)
        yield SlowChain(backend, llm, rag, short, long)


def long_body(route: str) -> dict[str, object]:
    """A request for 1000 tokens (10 s) on a gateway route."""
    if route == "/v1/chat/completions":
        return {"messages": [{"role": "user", "content": QUESTION}], "max_tokens": 1000, "stream": True}
    return {"query": QUESTION, "parameters": {"max_new_tokens": 1000}}


async def test_a_grpc_deadline_on_answer_stream_ends_the_chain_and_frees_the_slot(slow: SlowChain) -> None:
    before = slow.backend.produced
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in slow.rag.stub.AnswerStream(answer_request(LONG), timeout=1.5):
            pass
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert await slow.stopped(before) < 500  # of 1000
    assert (await slow.rag.stub.Answer(answer_request(), timeout=30)).final.answer


@pytest.mark.parametrize("route", ["/v1/answer", "/v1/answer/stream", "/v1/chat/completions"])
async def test_a_gateway_deadline_ends_the_chain_with_deadline_exceeded_and_frees_the_slot(
    slow: SlowChain, route: str
) -> None:
    before = slow.backend.produced
    response = await slow.short.post(route, json=long_body(route))
    if route == "/v1/answer":
        assert response.status_code == 504 and response.json()["error"]["status"] == "DEADLINE_EXCEEDED"
    else:  # the stream started (200): the deadline arrives as its last event
        assert response.status_code == 200
        last = [line for line in response.text.splitlines() if line.startswith("data:")][-1]
        error = json.loads(last.removeprefix("data:"))["error"]
        assert "DEADLINE_EXCEEDED" in (error.get("status"), error.get("code")), error
    assert await slow.stopped(before) < 500
    ok = await slow.short.post("/v1/answer", json={"query": QUESTION, "parameters": {"max_new_tokens": 4}})
    assert ok.status_code == 200


@pytest.mark.parametrize("route", ["/v1/answer/stream", "/v1/chat/completions"])
async def test_an_http_client_leaving_mid_stream_stops_the_generation(slow: SlowChain, route: str) -> None:
    before = slow.backend.produced
    async with slow.long.stream("POST", route, json=long_body(route)) as response:
        assert response.status_code == 200
        data = 0
        async for line in response.aiter_lines():
            data += line.startswith("data:")
            if data >= 4:  # context or role, then some tokens
                break
    # the connection is closed: gateway → RAG → LLM are cancelled in turn
    assert await slow.stopped(before) < 500


# ---- overload ------------------------------------------------------------------------------------------------


async def test_overload_is_refused_at_once_at_every_entry_point_and_in_flight_streams_finish(embedder) -> None:
    backend = EchoBackend(token_delay_s=0.01)
    async with (
        running_llm(backend) as llm,
        running_rag(llm.target, embedder, max_concurrent=1, max_queued=0) as rag,
        serving_gateway(f"127.0.0.1:{rag.port}", request_timeout_s=30) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        await rag.ingest(DOCS)
        stream = rag.stub.AnswerStream(answer_request(llm_pb.GenerationParameters(max_new_tokens=150)), timeout=60)
        assert (await stream.read()).HasField("context")
        start = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await rag.stub.Answer(answer_request(), timeout=30)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and error_reason(err.value) == "OVERLOADED"
        busy = await http.post("/v1/answer", json={"query": QUESTION})
        assert busy.status_code == 429 and busy.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
        sse = await http.post("/v1/answer/stream", json={"query": QUESTION})
        assert sse.status_code == 429
        chat = await http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": QUESTION}]})
        assert chat.status_code == 429 and chat.json()["error"]["type"] == "rate_limit_error"
        assert time.monotonic() - start < 1.4  # all refused while the 1.5 s stream still runs: not queued
        last = await read_to_end(stream)
        assert last.HasField("final") and last.final.usage.completion_tokens == 150  # unaffected
        assert (await rag.stub.Answer(answer_request(), timeout=30)).final.answer


async def test_llm_overload_reaches_the_rag_caller_as_resource_exhausted(embedder) -> None:
    backend = EchoBackend(token_delay_s=0.01)
    async with (
        running_llm(backend, max_concurrent=1, max_queued=0) as llm,
        running_rag(llm.target, embedder) as rag,
    ):
        await rag.ingest(DOCS)
        stream = rag.stub.AnswerStream(answer_request(llm_pb.GenerationParameters(max_new_tokens=150)), timeout=60)
        assert (await stream.read()).HasField("context")
        assert (await stream.read()).HasField("delta")  # it holds the LLM's only slot now
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await rag.stub.Answer(answer_request(), timeout=30)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (await read_to_end(stream)).final.usage.completion_tokens == 150


# ---- ingestion interrupted -----------------------------------------------------------------------------------


@pytest.mark.slow
async def test_ingestion_interrupted_half_way_then_rerun_leaves_no_duplicates_and_loses_nothing(embedder) -> None:
    documents = corpus(limit=27)  # 74 chunks: one write batch (64 chunks) fills after the 25th document
    async with running_rag("127.0.0.1:1", embedder) as rag:
        store = rag.server.rag.store
        hold = asyncio.Event()

        async def part_then_hang() -> AsyncIterator[pb.IngestDocumentsRequest]:
            for document in documents:
                yield pb.IngestDocumentsRequest(document=document)
            await hold.wait()  # the client "dies" before ending its stream: the last documents are not written

        call = rag.stub.IngestDocuments(part_then_hang())
        deadline = time.monotonic() + 60
        while await store.count() == 0:  # a batch is written
            assert time.monotonic() < deadline and not call.done()
            await asyncio.sleep(0.05)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        partial = await store.count()
        rerun = await rag.ingest(documents)
        assert rerun.documents_written == len(documents) and not rerun.rejected
        assert 0 < partial < rerun.chunks_written  # the interrupted run had written part of it
        # Deterministic point ids (document id, chunk index): every chunk once, none twice, none missing.
        assert await store.count() == rerun.chunks_written == 74
