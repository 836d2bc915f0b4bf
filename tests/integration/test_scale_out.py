"""Scale-out on loopback: two RAG replicas behind client-side round robin (servekit.channels.client_channel).

Each replica talks to its own LLM service (echo backend), so the backends' token counters show which
replica served. The replicas hold the same documents, as replicas of one Qdrant collection would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import grpc
import pytest

from llm_service.backends.echo import EchoBackend
from llm_service.errors import BackendUnavailable
from llm_service.types import Completion, Request, Token
from llmtwin.llm.v1 import llm_service_pb2 as llm_pb
from llmtwin.rag.v1 import rag_service_pb2 as pb
from llmtwin.rag.v1 import rag_service_pb2_grpc
from rag_service.embedding import Embedder
from servekit.channels import client_channel, service_config
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


async def test_unavailable_is_retried_on_the_other_replica_only_before_the_first_message(embedder: Embedder) -> None:
    """A replica whose model server fails every generation answers UNAVAILABLE: a unary Answer before any
    message (retried on the other replica), a streamed answer after its context event (not replayed: the
    caller sees it). (An LLM service that does not answer at all fails the answer before its first message:
    the model's limits are needed to build the prompt that the context event describes.)"""
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

        async def answers(channel: grpc.aio.Channel, n: int = 8) -> list[object]:
            # One after the other: round robin then alternates strictly, so a retry always lands on the
            # other replica (concurrent calls share the rotation, and a retry may hit the broken one again).
            stub = rag_service_pb2_grpc.RagServiceStub(channel)
            results: list[object] = []
            for _ in range(n):
                try:
                    results.append(await stub.Answer(request, timeout=60))
                except grpc.aio.AioRpcError as err:
                    results.append(err)
            return results

        async with client_channel(target) as channel:
            assert all(isinstance(r, pb.AnswerResponse) for r in await answers(channel))
            stub = rag_service_pb2_grpc.RagServiceStub(channel)
            streamed = [await _events_until_error(stub, request) for _ in range(6)]
        failed = [events for events, err in streamed if err is not None]
        assert failed, "round robin sent some streams to the broken replica"
        for events, err in streamed:
            if err is not None:
                assert err.code() == grpc.StatusCode.UNAVAILABLE
                assert [e.WhichOneof("event") for e in events] == ["context"]  # started once, not replayed

        # Without the retry policy, round robin alone sends some unary answers to the broken replica.
        async with client_channel(target, max_attempts=1) as channel:
            results = await answers(channel)
        assert any(isinstance(r, grpc.aio.AioRpcError) and r.code() == grpc.StatusCode.UNAVAILABLE for r in results)


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
    assert "methodConfig" not in service_config(max_attempts=1)
