"""A loopback RagService (real grpc.aio server) for testing clients of the RAG contract.

It implements llmtwin.rag.v1.RagService and grpc.health.v1 on 127.0.0.1, port 0:

- ``AnswerStream`` sends one ``context`` event, then one ``delta`` per word of ``answer`` (each after
  ``delay_s``), then ``final``; ``Answer`` returns the same content in one message.
- The context's ``sources`` are its ``documents`` grouped by document (numbered from 1, evidence = the best
  chunk's content) unless ``sources`` is given (``()``: none, as from a server older than the field); the
  final's ``citations`` are the sources the answer's ``[n]`` markers name, in order of first citation, each
  once, as the contract says.
- ``hold_final`` (an ``asyncio.Event``), when given, holds the ``final`` message (and ``Answer``'s reply)
  until it is set, so that a test can look at a stream whose deltas are all out but which is not done;
  ``hold_context`` likewise holds a stream's first (``context``) message.
- ``fail`` makes the next calls fail with a rich status (ErrorInfo + BadRequest, encoded by
  servekit.errors exactly as the real services do), before the first event or after some deltas.
- Every call's request and ``x-request-id`` metadata are recorded, and so are cancellations
  (``cancelled`` is set when a client cancels a stream or an ``Answer`` call, ``cancelled_at`` says when;
  ``cancelled_calls`` counts them).
- ``validate`` (RAG service settings), when given, checks each request with the RAG service's own rules
  (``rag_service.convert``: query, retrieval options, generation parameters, history and conversation id) and
  refuses it with the same INVALID_ARGUMENT status, so that a client's idea of what is valid can be tested
  without the whole chain.

    async with serve_fake_rag(FakeRag(delay_s=0.05)) as rag:
        channel = grpc.aio.insecure_channel(rag.target)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from llmtwin.llm.v1 import llm_service_pb2 as llm_pb2
from llmtwin.rag.v1 import rag_service_pb2 as rag_pb2
from llmtwin.rag.v1 import rag_service_pb2_grpc
from rag_service import convert
from rag_service.feedback import make_feedback
from rag_service.pipeline.sources import CITATION
from rag_service.settings import Settings as RagSettings
from servekit.errors import InvalidArgument, ServiceError, to_status

RAG_SERVICE_NAME = "llmtwin.rag.v1.RagService"
DOMAIN = "rag.llmtwin"

# Cites source 1, then 2 and 7; there is no source 7, so the citations are [1, 2].
DEFAULT_ANSWER = (
    "Retrieval augmented generation grounds the answer in my own articles [1] and posts [2, 7], then streams it."
)
# The default answer's citations as the gateway's JSON shows them: [1] and [2, 7], with no source 7.
DEFAULT_CITATIONS = [
    {
        "number": 1,
        "document_id": "doc-1",
        "title": "An end-to-end framework for production-ready LLM systems",
        "link": "https://example.org/llm-twin",
    },
    {"number": 2, "document_id": "doc-2", "title": "Fine-tuning with DPO", "link": "https://example.org/dpo"},
]

DEFAULT_DOCUMENTS = (
    rag_pb2.RetrievedDocument(
        document_id="doc-1",
        kind=rag_pb2.CONTENT_KIND_ARTICLE,
        author_id="paul",
        author_full_name="Paul Iusztin",
        title="An end-to-end framework for production-ready LLM systems",
        link="https://example.org/llm-twin",
        chunk_index=0,
        content="The LLM Twin learns to write like you.",
        score=0.91,
        vector_score=0.72,
    ),
    rag_pb2.RetrievedDocument(
        document_id="doc-2",
        kind=rag_pb2.CONTENT_KIND_POST,
        author_id="maxime",
        author_full_name="Maxime Labonne",
        title="Fine-tuning with DPO",
        link="https://example.org/dpo",
        chunk_index=2,
        content="Preference alignment after supervised fine-tuning.",
        score=0.55,
        vector_score=0.61,
    ),
    rag_pb2.RetrievedDocument(
        document_id="doc-1",
        kind=rag_pb2.CONTENT_KIND_ARTICLE,
        author_id="paul",
        author_full_name="Paul Iusztin",
        title="An end-to-end framework for production-ready LLM systems",
        link="https://example.org/llm-twin",
        chunk_index=3,
        content="It is fine-tuned on your own articles, posts and code.",
        score=0.42,
        vector_score=0.58,
    ),
)


def sources_of(documents: tuple[rag_pb2.RetrievedDocument, ...]) -> list[rag_pb2.Source]:
    """The documents grouped by document id, in the rank of their best chunk, numbered from 1."""
    groups: dict[str, list[rag_pb2.RetrievedDocument]] = {}
    for document in documents:
        groups.setdefault(document.document_id, []).append(document)
    sources = []
    for number, chunks in enumerate(groups.values(), 1):
        best = chunks[0]
        sources.append(
            rag_pb2.Source(
                number=number,
                document_id=best.document_id,
                kind=best.kind,
                author_id=best.author_id,
                author_full_name=best.author_full_name,
                title=best.title,
                link=best.link,
                score=best.score,
                chunks=[
                    rag_pb2.SourceChunk(chunk_index=d.chunk_index, score=d.score, vector_score=d.vector_score)
                    for d in chunks
                ],
                evidence=best.content,
            )
        )
    return sources


@dataclass
class Failure:
    """A status to fail with: before any event (``after_deltas=None``) or after that many deltas."""

    code: grpc.StatusCode
    message: str = "injected failure"
    reason: str = ""
    violations: list[tuple[str, str]] = field(default_factory=list)
    after_deltas: int | None = None

    def status(self) -> grpc.Status:
        """The rich status, encoded by servekit like a real service's."""
        if self.code == grpc.StatusCode.INVALID_ARGUMENT:
            error: ServiceError = InvalidArgument(self.violations or [("query", "must not be empty")])
        else:
            error = ServiceError(self.message)
            error.code = self.code
            error.reason = self.code.name
        if self.reason:
            error.reason = self.reason
        return to_status(error, DOMAIN)


class FakeRag(rag_service_pb2_grpc.RagServiceServicer):
    """RagService test double; its attributes are the knobs and the recordings."""

    def __init__(
        self,
        *,
        answer: str = DEFAULT_ANSWER,
        delay_s: float = 0.0,
        documents: tuple[rag_pb2.RetrievedDocument, ...] = DEFAULT_DOCUMENTS,
        sources: tuple[rag_pb2.Source, ...] | None = None,
        finish_reason: int = llm_pb2.FINISH_REASON_END_OF_SEQUENCE,
        fail: Failure | None = None,
        hold_final: asyncio.Event | None = None,
        final_answer: str | None = None,
        validate: RagSettings | None = None,
        hold_context: asyncio.Event | None = None,
        trace_id: str = "",
    ) -> None:
        self.answer = answer
        self.delay_s = delay_s
        self.documents = documents
        self.sources = sources
        self.finish_reason = finish_reason
        self.fail = fail
        self.hold_final = hold_final
        self.final_answer = final_answer  # the final's text when it differs from the deltas (loop guard)
        self.validate = validate
        self.hold_context = hold_context
        self.trace_id = trace_id  # the final's trace id ("": traces off)
        self.requests: list[rag_pb2.AnswerRequest] = []
        self.request_ids: list[str] = []
        self.deltas_sent = 0
        self.cancelled = asyncio.Event()
        self.cancelled_at: float | None = None
        self.cancelled_calls = 0
        self.rejected = 0
        self.completed = 0
        self.feedback: list[rag_pb2.SubmitFeedbackRequest] = []  # SubmitFeedback calls, accepted or not

    def pieces(self) -> list[str]:
        """The deltas of the answer: one per word, spaces kept, so they concatenate to the answer."""
        words = self.answer.split(" ")
        return [word if i == 0 else " " + word for i, word in enumerate(words)]

    def context_sources(self) -> list[rag_pb2.Source]:
        """The sources of the context: ``sources`` when given, else the documents grouped."""
        return list(self.sources) if self.sources is not None else sources_of(self.documents)

    def citations(self) -> list[rag_pb2.Citation]:
        """The sources the answer's [n] markers name, in order of first citation, each once."""
        by_number = {source.number: source for source in self.context_sources()}
        numbers = [int(n) for group in CITATION.findall(self.answer) for n in group.split(",")]
        cited = {n: by_number[n] for n in numbers if n in by_number}
        return [
            rag_pb2.Citation(number=n, document_id=s.document_id, title=s.title, link=s.link) for n, s in cited.items()
        ]

    def context(self) -> rag_pb2.AnswerContext:
        """The context every answer carries."""
        return rag_pb2.AnswerContext(
            documents=self.documents,
            expanded_queries=[self.requests[-1].query if self.requests else ""],
            author=rag_pb2.Author(id="paul", full_name="Paul Iusztin"),
            sources=self.context_sources(),
        )

    def final(self, request_id: str) -> rag_pb2.AnswerFinal:
        """The final message every answer ends with."""
        completion_tokens = len(self.pieces())
        return rag_pb2.AnswerFinal(
            answer=self.answer if self.final_answer is None else self.final_answer,
            finish_reason=self.finish_reason,  # type: ignore[arg-type]
            usage=llm_pb2.Usage(
                prompt_tokens=42, completion_tokens=completion_tokens, total_tokens=42 + completion_tokens
            ),
            timings=[
                rag_pb2.StepTiming(step="search", seconds=0.004),
                rag_pb2.StepTiming(step="generate", seconds=0.2),
            ],
            request_id=request_id,
            trace_id=self.trace_id,
            time_to_first_token_s=0.05,
            total_time_s=0.25,
            model_id="fake-model",
            citations=self.citations(),
        )

    async def AnswerStream(
        self, request: rag_pb2.AnswerRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[rag_pb2.AnswerStreamResponse]:
        """One context event, then one delta per word, then final; fails or records cancellation as told."""
        request_id = self._record(request, context)
        await self._check(request, context)
        try:
            if self.fail and self.fail.after_deltas is None:
                await context.abort_with_status(self.fail.status())
            if self.hold_context:
                await self.hold_context.wait()
            yield rag_pb2.AnswerStreamResponse(context=self.context())
            for i, piece in enumerate(self.pieces()):
                if self.fail and self.fail.after_deltas == i:
                    await context.abort_with_status(self.fail.status())
                await asyncio.sleep(self.delay_s)
                self.deltas_sent += 1
                yield rag_pb2.AnswerStreamResponse(delta=rag_pb2.AnswerDelta(text=piece))
            if self.hold_final:
                await self.hold_final.wait()
            yield rag_pb2.AnswerStreamResponse(final=self.final(request_id))
            self.completed += 1
        except (asyncio.CancelledError, GeneratorExit):
            # When the client cancels the call, grpc.aio cancels the handler; if that lands while grpc is sending
            # a message (outside this generator), the generator is closed instead (GeneratorExit at its yield).
            self._cancelled()
            raise

    async def Answer(self, request: rag_pb2.AnswerRequest, context: grpc.aio.ServicerContext) -> rag_pb2.AnswerResponse:
        """The whole answer in one message."""
        request_id = self._record(request, context)
        await self._check(request, context)
        if self.fail:
            await context.abort_with_status(self.fail.status())
        try:
            await asyncio.sleep(self.delay_s)
            if self.hold_final:
                await self.hold_final.wait()
        except asyncio.CancelledError:
            self._cancelled()
            raise
        self.completed += 1
        return rag_pb2.AnswerResponse(context=self.context(), final=self.final(request_id))

    async def SubmitFeedback(
        self, request: rag_pb2.SubmitFeedbackRequest, context: grpc.aio.ServicerContext
    ) -> rag_pb2.SubmitFeedbackResponse:
        """Records the rating; fails as ``fail`` says, and checks it with the RAG service's rules under ``validate``."""
        self.feedback.append(request)
        if self.validate is not None:
            try:
                make_feedback(request.trace_id, request.rating, request.comment)
            except ServiceError as error:
                self.rejected += 1
                await context.abort_with_status(to_status(error, DOMAIN))
        if self.fail:
            await context.abort_with_status(self.fail.status())
        return rag_pb2.SubmitFeedbackResponse()

    def _cancelled(self) -> None:
        self.cancelled_at = time.monotonic()
        self.cancelled_calls += 1
        self.cancelled.set()

    async def _check(self, request: rag_pb2.AnswerRequest, context: grpc.aio.ServicerContext) -> None:
        if self.validate is None:
            return
        try:
            convert.query_and_options(request.query, request.options, self.validate)
            convert.parameters_from_proto(request.parameters)
            convert.conversation_from_proto(request.history, request.conversation_id, self.validate)
        except ServiceError as error:
            self.rejected += 1
            await context.abort_with_status(to_status(error, DOMAIN))

    def _record(self, request: rag_pb2.AnswerRequest, context: grpc.aio.ServicerContext) -> str:
        self.requests.append(request)
        metadata = dict(context.invocation_metadata() or ())
        request_id = str(metadata.get("x-request-id", ""))
        self.request_ids.append(request_id)
        return request.request_id or request_id


@dataclass
class FakeRagServer:
    """A running FakeRag: where it listens, and its health servicer to flip serving status."""

    fake: FakeRag
    port: int
    health: health.aio.HealthServicer

    @property
    def target(self) -> str:
        """host:port for grpc channels."""
        return f"127.0.0.1:{self.port}"

    async def set_serving(self, serving: bool, *, answering: bool | None = None) -> None:
        """Report the RagService (retrieval) and its answering capability (by default: the same) SERVING or
        NOT_SERVING through grpc.health.v1, as the RAG service does."""
        for name, up in ((RAG_SERVICE_NAME, serving), (f"{RAG_SERVICE_NAME}/Answer", answering)):
            up = serving if up is None else up
            status = health_pb2.HealthCheckResponse.SERVING if up else health_pb2.HealthCheckResponse.NOT_SERVING
            await self.health.set(name, status)


@asynccontextmanager
async def serve_fake_rag(fake: FakeRag | None = None) -> AsyncIterator[FakeRagServer]:
    """Run a FakeRag on 127.0.0.1, port 0, reporting SERVING, until the block exits."""
    fake = fake or FakeRag()
    server = grpc.aio.server()
    rag_service_pb2_grpc.add_RagServiceServicer_to_server(fake, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    running = FakeRagServer(fake=fake, port=port, health=health_servicer)
    await running.set_serving(True)
    try:
        yield running
    finally:
        await server.stop(grace=None)
