"""Scale-out on loopback: two RAG replicas behind client-side round robin (servekit.channels.client_channel).

Each replica talks to its own LLM service (echo backend), so the backends' token counters show which
replica served. The replicas hold the same documents, as replicas of one Qdrant collection would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import grpc
import pytest

from llm_service.backends.echo import EchoBackend
from llm_service.errors import BackendUnavailable
from llm_service.server import LlmServer
from llm_service.settings import Settings as LlmSettings
from llm_service.types import Completion, Request, Token
from llmtwin.llm.v1 import llm_service_pb2 as llm_pb
from llmtwin.llm.v1 import llm_service_pb2_grpc as llm_grpc
from llmtwin.rag.v1 import rag_service_pb2 as pb
from llmtwin.rag.v1 import rag_service_pb2_grpc
from rag_service.embedding import Embedder
from servekit.channels import client_channel, service_config
from servekit.errors import error_reason
from tests.support.dns import running_dns
from tests.support.llm import running_llm
from tests.support.rag import RunningRag, corpus, running_rag

pytestmark = pytest.mark.asyncio(loop_scope="session")

DOCS = [d for d in corpus() if d.id.endswith("-001")][:3]
REQUESTS = 24
CONCURRENCY = 4
PARAMETERS = llm_pb.GenerationParameters(max_new_tokens=8)


class GenerationDown(EchoBackend):
    """Describes the model and counts tokens, but every generation finds the model server unreachable."""

    async def generate(self, request: Request) -> AsyncIterator[Token | Completion]:  # type: ignore[override]
        """Raises BackendUnavailable before any token."""
        raise BackendUnavailable("the model server is down")
        yield  # an async generator, like every backend's


def _target(*replicas: RunningRag | int) -> str:
    ports = [r if isinstance(r, int) else r.port for r in replicas]
    return "ipv4:" + ",".join(f"127.0.0.1:{p}" for p in ports)


async def _answer(stub: rag_service_pb2_grpc.RagServiceStub, i: int) -> list[pb.AnswerStreamResponse]:
    request = pb.AnswerRequest(
        query=f"What is a KV cache? ({i})",
        request_id=f"scale-{i}",
        parameters=PARAMETERS,
    )
    return [event async for event in stub.AnswerStream(request, timeout=60)]


async def _load(stub: rag_service_pb2_grpc.RagServiceStub, on_done: asyncio.Queue[int] | None = None) -> list[object]:
    """REQUESTS answers, CONCURRENCY at a time; each result is the event list or the exception."""
    slots = asyncio.Semaphore(CONCURRENCY)

    async def one(i: int) -> object:
        async with slots:
            try:
                return await _answer(stub, i)
            except grpc.aio.AioRpcError as err:
                return err
            finally:
                if on_done is not None:
                    on_done.put_nowait(i)

    return list(await asyncio.gather(*(one(i) for i in range(REQUESTS))))


def _complete(result: object) -> bool:
    return isinstance(result, list) and bool(result) and result[-1].HasField("final")


async def _two_replicas(
    stack: AsyncExitStack, embedder: Embedder, backends: list[EchoBackend], **rag_overrides: object
) -> tuple[list[RunningRag], rag_service_pb2_grpc.RagServiceStub]:
    """Two LLM + RAG replica pairs with DOCS ingested, and a stub on a round-robin channel that has reached both."""
    llms = [await stack.enter_async_context(running_llm(b)) for b in backends]
    rags = [await stack.enter_async_context(running_rag(llm.target, embedder, **rag_overrides)) for llm in llms]
    for rag in rags:
        await rag.ingest(DOCS)
    channel = client_channel(_target(*rags))
    stack.push_async_callback(channel.close)
    stub = rag_service_pb2_grpc.RagServiceStub(channel)
    # Until both connections are up, round robin has only one address to pick.
    deadline = asyncio.get_running_loop().time() + 30
    while not all(b.produced for b in backends):
        assert asyncio.get_running_loop().time() < deadline, "both replicas answer"
        await _answer(stub, -1)
    return rags, stub


async def test_two_replicas_share_the_load_and_stopping_one_loses_no_request(embedder: Embedder) -> None:
    backends = [EchoBackend(token_delay_s=0.005), EchoBackend(token_delay_s=0.005)]
    async with AsyncExitStack() as stack:
        rags, stub = await _two_replicas(stack, embedder, backends)
        start = [b.produced for b in backends]

        done: asyncio.Queue[int] = asyncio.Queue()
        load = asyncio.create_task(_load(stub, done))
        for _ in range(REQUESTS // 3):  # a third of the run on both replicas, then one stops
            await asyncio.wait_for(done.get(), 60)
        served_before = [b.produced - s for b, s in zip(backends, start, strict=True)]
        await rags[1].server.stop()  # NOT_SERVING, refuse new calls, let its in-flight streams finish
        stopped_at = backends[1].produced
        results = await asyncio.wait_for(load, 120)

    failures = [r for r in results if not _complete(r)]
    assert not failures, failures[:3]  # every answer whole: none lost, none cut
    assert all(served_before), f"both replicas served before the stop: {served_before}"
    assert backends[1].produced == stopped_at, "the stopped replica served nothing more"
    assert backends[0].produced > start[0] + served_before[0], "the remaining replica took the rest of the run"


async def test_a_killed_replica_loses_only_the_streams_that_had_started(embedder: Embedder) -> None:
    """No grace: the killed replica's calls end UNAVAILABLE at once. Those still queued in its admission
    (nothing sent yet) are retried on the other replica; only streams already under way are cut."""
    backends = [EchoBackend(token_delay_s=0.02), EchoBackend(token_delay_s=0.02)]
    async with AsyncExitStack() as stack:
        rags, stub = await _two_replicas(stack, embedder, backends, max_concurrent=2, max_queued=64)
        deadline = asyncio.get_running_loop().time() + 30

        request = pb.AnswerRequest(query="What is a KV cache?", parameters=PARAMETERS)
        calls = [asyncio.create_task(_events_until_error(stub, request)) for _ in range(8)]
        while rags[1].server.admission.waiting == 0:  # some calls wait for a slot on the replica to kill
            assert asyncio.get_running_loop().time() < deadline + 30, "a queue forms"
            await asyncio.sleep(0.005)
        await rags[1].server.app.server.stop(0)  # the process dies: every call on it ends now
        results = await asyncio.wait_for(asyncio.gather(*calls), 60)

    cut = [(events, err) for events, err in results if err is not None]
    assert len(cut) <= 2, "at most the killed replica's two streams in progress are lost"
    for events, err in cut:
        assert err is not None and err.code() == grpc.StatusCode.UNAVAILABLE
        assert events, "a call that had received nothing was retried, not lost"
    assert all(events[-1].HasField("final") for events, err in results if err is None)


async def test_an_error_a_replica_answered_is_not_retried_elsewhere_and_a_started_stream_is_not_replayed(
    embedder: Embedder,
) -> None:
    """A replica whose model server fails every generation answers UNAVAILABLE (LLM_UNAVAILABLE): a unary Answer
    before any message, a streamed answer after its context event. Neither is retried on the other replica:
    the error came from the replica's handler, with the no-retry pushback (every replica dials the same LLM
    tier, whose own channel already retried), and a stream that has started is never replayed. (An LLM
    service that does not answer at all fails the answer before its first message: the model's limits are
    needed to build the prompt that the context event describes.)"""
    async with (
        running_llm(EchoBackend()) as llm,
        running_llm(GenerationDown()) as down,
        running_rag(llm.target, embedder) as good,
        running_rag(down.target, embedder) as broken,
    ):
        for rag in (good, broken):
            await rag.ingest(DOCS)
        target = _target(good, broken)
        request = pb.AnswerRequest(query="What is a KV cache?", parameters=PARAMETERS)

        async with client_channel(target) as channel:
            stub = rag_service_pb2_grpc.RagServiceStub(channel)
            for _ in range(4):  # both replicas connected (retrieval needs no LLM) before the count starts
                await stub.Retrieve(pb.RetrieveRequest(query="KV cache"), timeout=60)
            # One after the other: round robin then alternates strictly between the two replicas.
            results: list[object] = []
            for _ in range(8):
                try:
                    results.append(await stub.Answer(request, timeout=60))
                except grpc.aio.AioRpcError as err:
                    results.append(err)
            streamed = [await _events_until_error(stub, request) for _ in range(6)]

    failed = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(failed) == 4, "every answer sent to the broken replica failed there, none moved to the other"
    assert {(err.code(), error_reason(err)) for err in failed} == {(grpc.StatusCode.UNAVAILABLE, "LLM_UNAVAILABLE")}
    assert sum(isinstance(r, pb.AnswerResponse) for r in results) == 4
    cut = [(events, err) for events, err in streamed if err is not None]
    assert len(cut) == 3, "round robin sent every other stream to the broken replica"
    for events, err in cut:
        assert err is not None and err.code() == grpc.StatusCode.UNAVAILABLE
        assert [e.WhichOneof("event") for e in events] == ["context"]  # started once, not replayed


async def test_a_replica_started_later_gets_traffic_once_the_first_connection_ages_out() -> None:
    """The target is a DNS name (a headless Service) answered by a loopback DNS server: first one replica's
    address, then, once a second replica is up, both. The client re-resolves only when a connection ends, so
    without a max connection age it would never use the new replica; with one (1 s here, 30 s by default)
    the first replica's GOAWAY makes it re-resolve, and calls spread over both, none failing."""
    backends = [EchoBackend(), EchoBackend()]
    age = {"max_connection_age_s": 1.0, "max_connection_age_grace_s": 30.0}
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(llm_on(backends[0], "127.0.0.1", 0, **age))
        port = first.app.port
        dns, dns_port = await stack.enter_async_context(running_dns(["127.0.0.1"]))
        channel = client_channel(f"dns://127.0.0.1:{dns_port}/llm-replicas.test:{port}")
        stack.push_async_callback(channel.close)
        stub = llm_grpc.LlmServiceStub(channel)
        request = llm_pb.GenerateRequest(prompt="one two", parameters=llm_pb.GenerationParameters(max_new_tokens=2))
        failures: list[grpc.aio.AioRpcError] = []

        async def call() -> None:
            try:
                await stub.Generate(request, timeout=30)
            except grpc.aio.AioRpcError as err:
                failures.append(err)

        for _ in range(5):
            await call()
        assert [b.produced > 0 for b in backends] == [True, False]

        # Same port on another loopback address: a new pod, and the DNS answer that lists it.
        await stack.enter_async_context(llm_on(backends[1], "127.0.0.2", port, **age))
        dns.addresses = ["127.0.0.1", "127.0.0.2"]
        async with asyncio.timeout(120):  # an event to wait for, not a speed bound: the first replica's GOAWAY
            while backends[1].produced == 0:
                await call()
                await asyncio.sleep(0.02)
        before = [b.produced for b in backends]
        for _ in range(10):  # and both replicas keep serving
            await call()
        after = [b.produced for b in backends]

    assert failures == []
    assert [a > b for a, b in zip(after, before, strict=True)] == [True, True]
    assert [qtype for _, qtype in dns.queries].count(1) >= 2, "the client asked the DNS server again"


@asynccontextmanager
async def llm_on(backend: EchoBackend, host: str, port: int, **overrides: object) -> AsyncIterator[LlmServer]:
    """An LLM service on `host:port` (port 0: any free)."""
    settings = LlmSettings(
        host=host,
        port=port,
        metrics_port=0,
        health_interval_s=0.2,
        shutdown_grace_s=1,
        shutdown_drain_s=0,
        **overrides,  # type: ignore[arg-type]
    )
    server = LlmServer(settings, backend)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def _events_until_error(
    stub: rag_service_pb2_grpc.RagServiceStub, request: pb.AnswerRequest
) -> tuple[list[pb.AnswerStreamResponse], grpc.aio.AioRpcError | None]:
    events: list[pb.AnswerStreamResponse] = []
    try:
        async for event in stub.AnswerStream(request, timeout=60):
            events.append(event)
    except grpc.aio.AioRpcError as err:
        return events, err
    return events, None


@pytest.mark.asyncio(loop_scope="session")  # the module mark would warn on a plain function
async def test_service_config_retries_only_unavailable_with_round_robin() -> None:
    config = service_config()
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    [method] = config["methodConfig"]
    assert method["name"] == [{}]
    assert method["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE", "CANCELLED"]
    assert method["retryPolicy"]["maxAttempts"] == 3
    assert config["retryThrottling"] == {"maxTokens": 10, "tokenRatio": 0.1}
    assert "methodConfig" not in service_config(max_attempts=1)
