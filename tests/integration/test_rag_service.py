"""The RAG service over real gRPC, with a real LLM service (echo backend: fast, deterministic) and a real store."""

from __future__ import annotations

import asyncio
import dataclasses

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llm_service.backends.echo import EchoBackend
from llmtwin.llm.v1 import llm_service_pb2 as llm_pb
from llmtwin.rag.v1 import rag_service_pb2 as pb
from rag_service.documents import parse_jsonl
from rag_service.ingestor import Ingestor
from rag_service.llm_client import LlmClient
from servekit.errors import error_reason, field_violations
from servekit.logs import request_id_var, trace_id_var
from tests.support.llm import running_llm, stopped_producing
from tests.support.procs import free_port
from tests.support.rag import CORPUS, corpus, running_rag

pytestmark = pytest.mark.asyncio(loop_scope="session")

# A slice of the sample corpus: every author, every kind.
SUBSET = [d for d in corpus() if d.id.endswith(("-001", "-002", "-003"))]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(embedder):
    """An LLM service (echo backend) and a RAG service with SUBSET ingested, shared by read-only tests."""
    async with running_llm(EchoBackend()) as llm, running_rag(llm.target, embedder) as rag:
        await rag.ingest(SUBSET)
        yield rag


async def answer_events(stub, request: pb.AnswerRequest) -> list[pb.AnswerStreamResponse]:
    return [m async for m in stub.AnswerStream(request)]


async def test_ingest_reports_counts_and_rejects_invalid_documents_by_position(embedder):
    async with running_llm(EchoBackend()) as llm, running_rag(llm.target, embedder) as rag:
        bad_kind = pb.Document(id="x1", author_id="a", author_full_name="A", content="text")
        no_content = pb.Document(id="x2", kind=pb.CONTENT_KIND_POST, author_id="a", author_full_name="A")
        response = await rag.ingest([SUBSET[0], bad_kind, SUBSET[1], no_content])
        assert response.documents_written == 2 and response.chunks_written >= 2
        assert [(r.index, r.document_id) for r in response.rejected] == [(1, "x1"), (3, "x2")]
        assert "kind" in response.rejected[0].reason and "content" in response.rejected[1].reason
        again = await rag.ingest([SUBSET[0], SUBSET[1]])
        assert again.chunks_written == response.chunks_written
        assert await rag.server.rag.store.count() == response.chunks_written  # updated, not duplicated


async def test_retrieve_finds_the_author_named_in_the_query_and_filters_on_it(stack):
    rag = stack
    response = await rag.stub.Retrieve(
        pb.RetrieveRequest(
            query="What does Elena Varga say about batching requests?", options=pb.RetrievalOptions(top_k=4)
        )
    )
    context = response.context
    assert context.author.id == "elena-varga"
    assert len(context.documents) == 4
    assert {d.author_id for d in context.documents} == {"elena-varga"}
    assert [d.score for d in context.documents] == sorted((d.score for d in context.documents), reverse=True)
    assert {t.step for t in response.timings} >= {"self_query", "embed", "search", "rerank"}

    first_name = await rag.stub.Retrieve(pb.RetrieveRequest(query="How does Jonas choose the LoRA rank?"))
    assert first_name.context.author.id == "jonas-lindqvist"

    unknown = await rag.stub.Retrieve(pb.RetrieveRequest(query="What does Ada Lovelace think of vector search?"))
    assert not unknown.context.HasField("author")  # an unknown name never becomes a filter
    assert len({d.author_id for d in unknown.context.documents}) >= 1

    off = await rag.stub.Retrieve(
        pb.RetrieveRequest(query="Elena Varga on batching", options=pb.RetrievalOptions(self_query=False, top_k=10))
    )
    assert not off.context.HasField("author")


async def test_explicit_author_and_kind_filters(stack):
    rag = stack
    options = pb.RetrievalOptions(author="Priya Raman", kinds=[pb.CONTENT_KIND_POST], top_k=3)
    response = await rag.stub.Retrieve(pb.RetrieveRequest(query="monitoring", options=options))
    assert {(d.author_id, d.kind) for d in response.context.documents} == {("priya-raman", pb.CONTENT_KIND_POST)}
    by_id = await rag.stub.Retrieve(
        pb.RetrieveRequest(query="monitoring", options=pb.RetrievalOptions(author="priya-raman"))
    )
    assert by_id.context.author.full_name == "Priya Raman"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await rag.stub.Retrieve(pb.RetrieveRequest(query="x", options=pb.RetrievalOptions(author="Nobody Known")))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(err.value)[0][0] == "options.author"


async def test_answer_stream_sends_context_then_deltas_then_final(stack):
    rag = stack
    request = pb.AnswerRequest(
        query="What did Tomás Okafor learn about change streams?",
        parameters=llm_pb.GenerationParameters(max_new_tokens=20),
        request_id="answer-1",
    )
    call = rag.stub.AnswerStream(request)
    events = [m async for m in call]
    kinds = [m.WhichOneof("event") for m in events]
    assert kinds[0] == "context" and kinds[-1] == "final" and set(kinds[1:-1]) == {"delta"}
    assert len(kinds) == 22
    context, final = events[0].context, events[-1].final
    assert context.author.id == "tomas-okafor" and context.documents
    assert final.answer == "".join(m.delta.text for m in events[1:-1])
    assert final.usage.completion_tokens == 20 and final.usage.prompt_tokens > 50
    assert final.finish_reason == llm_pb.FINISH_REASON_LENGTH
    assert final.request_id == "answer-1" and final.model_id == "echo"
    assert [t.step for t in final.timings] == [
        "self_query",
        "embed",
        "search",
        "rerank",
        "compress",
        "prompt",
        "generate",
    ]
    assert 0 < final.time_to_first_token_s <= final.total_time_s
    assert ("x-request-id", "answer-1") in tuple(await call.trailing_metadata())

    unary = await rag.stub.Answer(request)
    assert unary.final.answer == final.answer
    assert [d.document_id for d in unary.context.documents] == [d.document_id for d in context.documents]


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.AnswerRequest(query=""), "query"),
        (pb.AnswerRequest(query="x" * 2001), "query"),
        (pb.AnswerRequest(query="q", options=pb.RetrievalOptions(top_k=0)), "options.top_k"),
        (pb.AnswerRequest(query="q", options=pb.RetrievalOptions(top_k=51)), "options.top_k"),
        (pb.AnswerRequest(query="q", options=pb.RetrievalOptions(expand_queries=9)), "options.expand_queries"),
        (pb.AnswerRequest(query="q", options=pb.RetrievalOptions(kinds=[7])), "options.kinds[0]"),
        (pb.AnswerRequest(query="q", parameters=llm_pb.GenerationParameters(temperature=3)), "parameters.temperature"),
        (
            pb.AnswerRequest(query="q", parameters=llm_pb.GenerationParameters(max_new_tokens=0)),
            "parameters.max_new_tokens",
        ),
        (  # the echo model's 2048 tokens minus 2040 new ones leave no room for the question: the parameter's fault
            pb.AnswerRequest(query="What is a KV cache?", parameters=llm_pb.GenerationParameters(max_new_tokens=2040)),
            "parameters.max_new_tokens",
        ),
    ],
)
async def test_bad_requests_get_invalid_argument_with_field_violations(stack, request_, field):
    rag = stack
    for call in (rag.stub.Answer(request_), rag.stub.AnswerStream(request_)):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call if isinstance(call, grpc.aio.UnaryUnaryCall) else [m async for m in call]
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in [f for f, _ in field_violations(err.value)]
    assert (await rag.stub.Retrieve(pb.RetrieveRequest(query="still serving"))).context is not None


async def health_status(channel: grpc.aio.Channel, service: str) -> str:
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service))
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


async def settled_health(channel: grpc.aio.Channel, services: list[str], want: list[str]) -> list[str]:
    """The services' statuses once they read `want`, or as they are after 10 s of health checks."""
    deadline = asyncio.get_running_loop().time() + 10
    while (got := [await health_status(channel, s) for s in services]) != want:
        if asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.05)
    return got


async def test_llm_service_down_gives_unavailable_while_retrieve_keeps_working(embedder):
    async with running_rag(f"127.0.0.1:{free_port()}", embedder) as rag:
        await rag.ingest(SUBSET[::9])
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await rag.stub.Answer(pb.AnswerRequest(query="What is a KV cache?"))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "LLM service" in err.value.details() and error_reason(err.value) == "LLM_UNAVAILABLE"
        retrieved = await rag.stub.Retrieve(pb.RetrieveRequest(query="What is a KV cache?"))
        assert retrieved.context.documents
        # Readiness per capability: the replica stays in rotation (it can retrieve); it cannot answer.
        services = ["llmtwin.rag.v1.RagService", "llmtwin.rag.v1.RagService/Answer"]
        assert await settled_health(rag.channel, services, ["SERVING", "NOT_SERVING"]) == ["SERVING", "NOT_SERVING"]


async def test_answering_capability_follows_the_llm_service(embedder):
    services = ["llmtwin.rag.v1.RagService", "llmtwin.rag.v1.RagService/Answer"]
    async with running_llm(EchoBackend()) as llm, running_rag(llm.target, embedder) as rag:
        assert await settled_health(rag.channel, services, ["SERVING", "SERVING"]) == ["SERVING", "SERVING"]
        await llm.server.app.set_serving(False)  # e.g. its SageMaker endpoint went away
        assert await settled_health(rag.channel, services, ["SERVING", "NOT_SERVING"]) == ["SERVING", "NOT_SERVING"]


async def test_cancelled_answer_stops_the_generation(embedder):
    backend = EchoBackend(token_delay_s=0.01)
    async with running_llm(backend) as llm, running_rag(llm.target, embedder) as rag:
        await rag.ingest(SUBSET[::9])
        call = rag.stub.AnswerStream(
            pb.AnswerRequest(query="Tell me everything", parameters=llm_pb.GenerationParameters(max_new_tokens=1000))
        )
        assert (await call.read()).HasField("context")
        await call.read()
        call.cancel()
        assert await stopped_producing(backend, llm.server.admission, rag.server.admission) < 200  # of 1000


async def test_deadline_passes_through_to_the_llm_service(embedder):
    backend = EchoBackend(token_delay_s=0.01)
    async with running_llm(backend) as llm, running_rag(llm.target, embedder) as rag:
        await rag.ingest(SUBSET[::9])
        request = pb.AnswerRequest(
            query="Tell me everything", parameters=llm_pb.GenerationParameters(max_new_tokens=1000)
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await rag.stub.Answer(request, timeout=0.5)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert await stopped_producing(backend, llm.server.admission) < 200  # of 1000, 10 ms apart


async def test_pre_retrieval_steps_fall_back_when_the_llm_is_down_or_slow(embedder):
    options = pb.RetrievalOptions(expand_queries=2, top_k=3)
    query = "What does Ada Lovelace think about KV caches?"  # a full name no author has: asks the LLM
    async with running_rag(f"127.0.0.1:{free_port()}", embedder) as rag:
        await rag.ingest(SUBSET[::9])
        down = await rag.stub.Retrieve(pb.RetrieveRequest(query=query, options=options))
        assert list(down.context.expanded_queries) == [query] and not down.context.HasField("author")
        assert down.context.documents
    slow = EchoBackend(token_delay_s=0.05)  # 80 tokens of expansion would take 4 s
    async with (
        running_llm(slow) as llm,
        running_rag(llm.target, embedder, expand_timeout_s=0.3, self_query_timeout_s=0.3) as rag,
    ):
        await rag.ingest(SUBSET[::9])
        response = await rag.stub.Retrieve(pb.RetrieveRequest(query=query, options=options))
        timings = {t.step: t.seconds for t in response.timings}
        assert list(response.context.expanded_queries) == [query] and response.context.documents
        assert timings["expand"] < 1 and timings["self_query"] < 1


async def test_answers_are_unchanged_when_opik_is_down(embedder, monkeypatch):
    from rag_service.opik_export import OpikTracer
    from rag_service.opik_sdk import OpikSettings

    monkeypatch.setenv("OPIK_DEFAULT_FLUSH_TIMEOUT", "1")
    monkeypatch.delenv("OPIK_TRACK_DISABLE", raising=False)
    host = f"http://127.0.0.1:{free_port()}/api"  # nothing listens there
    settings = OpikSettings(host=host, api_key="test-key", workspace="default", project_name="rag-tests")
    tracer = OpikTracer(settings, sample_rate=1.0, buffer_size=4, flush_timeout_s=0.5)
    async with running_llm(EchoBackend()) as llm, running_rag(llm.target, embedder, tracer=tracer) as rag:
        await rag.ingest(SUBSET[::9])
        request = pb.AnswerRequest(
            query="What is a KV cache?", parameters=llm_pb.GenerationParameters(max_new_tokens=8)
        )
        answers = [await rag.stub.Answer(request, timeout=10) for _ in range(8)]  # more than the buffer holds
        assert all(a.final.usage.completion_tokens == 8 and a.final.trace_id for a in answers)
        assert len({a.final.answer for a in answers}) == 1


class IdRecordingBackend(EchoBackend):
    """An echo backend that notes, per call, the request id and trace id the LLM service's RPC saw."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, str, str]] = []
        self.inputs: list[str] = []  # per generation and count: "prompt" (raw text) or "messages"

    def _note(self, method: str) -> None:
        self.calls.append((method, request_id_var.get(), trace_id_var.get()))

    def info(self):  # type: ignore[no-untyped-def]
        self._note("info")
        return super().info()

    async def count_tokens(self, input):  # type: ignore[no-untyped-def]
        self._note("count_tokens")
        self.inputs.append("prompt" if input.prompt is not None else "messages")
        return await super().count_tokens(input)

    def generate(self, request):  # type: ignore[no-untyped-def]
        self._note(f"generate:{request.request_id}")
        self.inputs.append("prompt" if request.input.prompt is not None else "messages")
        return super().generate(request)


async def test_every_llm_call_made_for_an_answer_carries_its_request_id_and_trace_id(embedder):
    backend = IdRecordingBackend()
    async with running_llm(backend) as llm, running_rag(llm.target, embedder) as rag:
        await rag.ingest(SUBSET[:3])
        backend.calls.clear()
        request = pb.AnswerRequest(
            # A full name that neither matches an author nor reads as "does X think": self-query asks the LLM.
            query="Vector search notes, Ada Lovelace edition",
            options=pb.RetrievalOptions(expand_queries=2),
            parameters=llm_pb.GenerationParameters(max_new_tokens=4),
            request_id="ids-1",
        )
        events = [m async for m in rag.stub.AnswerStream(request)]
    assert events[-1].final.request_id == "ids-1"
    methods = {method for method, _, _ in backend.calls}
    # GetModelInfo, CountTokens, expansion and self-query (Generate) and the answer (GenerateStream).
    assert methods == {"info", "count_tokens", "generate:ids-1"}
    assert sum(m == "generate:ids-1" for m, _, _ in backend.calls) == 3
    assert {rid for _, rid, _ in backend.calls} == {"ids-1"}
    trace_ids = {tid for _, _, tid in backend.calls}
    assert len(trace_ids) == 1 and len(trace_ids.pop()) == 36  # one UUID for every call of this answer


@pytest.mark.parametrize("prompt_format", ["alpaca", "chat"])
async def test_the_prompt_format_setting_shapes_every_llm_call_expansion_and_self_query_included(
    embedder, prompt_format
):
    backend = IdRecordingBackend()
    async with (
        running_llm(backend) as llm,
        running_rag(llm.target, embedder, prompt_format=prompt_format) as rag,
    ):
        await rag.ingest(SUBSET[:3])
        request = pb.AnswerRequest(
            query="Vector search notes, Ada Lovelace edition",
            options=pb.RetrievalOptions(expand_queries=2),
            parameters=llm_pb.GenerationParameters(max_new_tokens=4),
        )
        await rag.stub.Answer(request)
    # Expansion, self-query, the prompt's token counts and the answer: one format.
    assert len(backend.inputs) >= 4
    assert set(backend.inputs) == {{"alpaca": "prompt", "chat": "messages"}[prompt_format]}


async def test_authors_written_past_this_replica_are_matched_within_the_refresh_time(embedder):
    # The store is empty at the first query; then an author arrives without this replica seeing the write
    # (another replica's IngestDocuments, or `ingest --direct`): self-query matches them once the cached
    # list is older than RAG_AUTHORS_REFRESH_S.
    async with running_llm(EchoBackend()) as llm, running_rag(llm.target, embedder, authors_refresh_s=0.3) as rag:
        query = pb.RetrieveRequest(query="What does Elena Varga say about batching requests?")
        first = await rag.stub.Retrieve(query)
        assert not first.context.HasField("author") and not first.context.documents
        elsewhere = Ingestor(rag.server.rag.store, embedder)  # the store, not this service
        documents, _ = parse_jsonl(CORPUS.read_text().splitlines())
        report = await elsewhere.ingest([d for d in documents if d.author_id == "elena-varga"][:2])
        assert report.documents_written == 2
        deadline = asyncio.get_running_loop().time() + 10
        while not (response := await rag.stub.Retrieve(query)).context.HasField("author"):
            assert asyncio.get_running_loop().time() < deadline, "the new author was never matched"
            await asyncio.sleep(0.1)
        assert response.context.author.id == "elena-varga"
        assert {d.author_id for d in response.context.documents} == {"elena-varga"}


async def test_the_model_info_is_read_again_after_its_ttl_so_a_changed_llm_tier_is_seen() -> None:
    backend = EchoBackend(adapters=("elena",))
    async with running_llm(backend) as llm:
        cached, expiring = LlmClient(llm.target, info_ttl_s=3600), LlmClient(llm.target, info_ttl_s=0)
        try:
            assert (await cached.model_info()).adapters == ("elena",)
            assert (await expiring.model_info()).adapters == ("elena",)
            backend._info = dataclasses.replace(backend.info(), adapters=("elena", "jonas"))  # a rolling update
            assert (await cached.model_info()).adapters == ("elena",)  # within the TTL: the cached answer
            assert (await expiring.model_info()).adapters == ("elena", "jonas")  # past it: read again
        finally:
            await cached.aclose()
            await expiring.aclose()
