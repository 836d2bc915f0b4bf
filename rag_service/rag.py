"""The advanced RAG pipeline: pre-retrieval, retrieval, post-retrieval, augmentation, generation, tracing."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import TypeVar

from google.protobuf import json_format

from llmtwin.llm.v1 import llm_service_pb2 as llm_pb
from rag_service import metrics
from rag_service.embedding import Embedder
from rag_service.errors import InvalidArgument, ServiceError
from rag_service.llm_client import MAX_STOP_SEQUENCES, LlmClient
from rag_service.pipeline.compress import Compressor
from rag_service.pipeline.expand import expand_query
from rag_service.pipeline.loops import LoopGuard
from rag_service.pipeline.prompt import STOP_SEQUENCES, TEMPLATE_VERSION, fit_prompt, names_list
from rag_service.pipeline.rerank import Reranker, VectorOrder
from rag_service.pipeline.search import dedupe, search_all
from rag_service.pipeline.self_query import Named, extract_author, normalize, resolve_name
from rag_service.pipeline.sources import Source, cited, group_by_document
from rag_service.settings import Settings
from rag_service.store.base import VectorStore
from rag_service.tracing import Tracer, TraceRecorder, tick
from rag_service.types import Author, Kind, ScoredChunk
from servekit.logs import trace_id_var

log = logging.getLogger(__name__)
T = TypeVar("T")
EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass(frozen=True, slots=True)
class Options:
    """Retrieval options of one request, defaults applied."""

    top_k: int
    expand_queries: int
    self_query: bool
    rerank: bool
    author: str = ""
    kinds: tuple[Kind, ...] = tuple(Kind)


@dataclass(slots=True)
class Retrieval:
    """The ranked context and how it was found: chunks best first, and the same grouped by document."""

    documents: list[ScoredChunk]
    queries: list[str]
    author: Author | None
    timings: dict[str, float] = field(default_factory=dict)
    sources: list[Source] = field(default_factory=list)
    unknown_person: str = ""  # a person the query asks about who is not an author in the store


@dataclass(frozen=True, slots=True)
class Delta:
    """A piece of the answer."""

    text: str


@dataclass(slots=True)
class Final:
    """The end of an answer."""

    answer: str
    finish_reason: int
    prompt_tokens: int
    completion_tokens: int
    timings: dict[str, float]
    trace_id: str
    ttft_s: float
    total_s: float
    model_id: str
    citations: list[Source] = field(default_factory=list)


class Rag:
    """Answers questions from the store's writing, streaming the generation from the LLM service."""

    def __init__(
        self,
        settings: Settings,
        store: VectorStore,
        embedder: Embedder,
        llm: LlmClient,
        reranker: Reranker,
        tracer: Tracer,
    ):
        self.settings = settings
        self.store = store
        self.embedder = embedder
        self.llm = llm
        self.reranker = reranker
        self.tracer = tracer
        self.compressor = Compressor(embedder.embed, scorer=settings.sentence_scorer)
        self._authors: list[Author] | None = None
        self._authors_at = 0.0  # tick() of the list's reading
        self._authors_refresh: asyncio.Task[list[Author]] | None = None

    async def authors(self) -> list[Author]:
        """Authors in the store, cached per replica for at most RAG_AUTHORS_REFRESH_S: an older list is still
        answered (no request waits on the store) while one refresh, shared by every caller, reads it again;
        only a replica without a list waits for it. Ingestion through this replica refreshes it at once."""
        stale = self._authors is None or tick() - self._authors_at >= self.settings.authors_refresh_s
        if stale and self._authors_refresh is None:
            self._authors_refresh = asyncio.create_task(self._read_authors())
            self._authors_refresh.add_done_callback(_log_failure)
        if self._authors is None and self._authors_refresh is not None:
            return await asyncio.shield(self._authors_refresh)
        return self._authors or []

    async def _read_authors(self) -> list[Author]:
        started = tick()
        try:
            authors = await self.store.authors()
        finally:
            current = self._authors_refresh is asyncio.current_task()  # not forgotten while reading
            if current:
                self._authors_refresh = None
        if current:
            self._authors, self._authors_at = authors, started
        return authors

    def forget_authors(self) -> None:
        """Drops the author cache after the store changed: the next caller waits for a list read from now on."""
        self._authors, self._authors_refresh = None, None

    async def find_author(self, name: str) -> Author:
        """The store's author with this id or full name; InvalidArgument for one the store does not have (asked
        again before refusing: the cache may predate the author's ingestion)."""
        wanted = normalize(name)
        for fresh in (False, True):
            if fresh:
                self.forget_authors()
            authors = await self.authors()
            for author in authors:
                if wanted in (normalize(author.id), normalize(author.full_name)):
                    return author
        known = ", ".join(a.full_name for a in authors) or "none yet"
        raise InvalidArgument({"options.author": f"unknown author {name!r}; authors in the store: {known}"})

    def context_budget(self, backend: int | None) -> int:
        """Estimated tokens of context the prompt gets (0: whole chunks), by LLM backend kind when known."""
        if self.settings.context_tokens >= 0:
            return self.settings.context_tokens
        if backend is None:
            info = self.llm.cached_info
            backend = info.backend if info is not None else llm_pb.BACKEND_KIND_EMBEDDED
        if backend == llm_pb.BACKEND_KIND_EMBEDDED:
            return self.settings.context_tokens_embedded
        return self.settings.context_tokens_remote

    async def retrieve(
        self,
        query: str,
        options: Options,
        rec: TraceRecorder,
        *,
        context_budget: int | None = None,
        compress: bool = True,
    ) -> Retrieval:
        """Pre-retrieval (concurrently), retrieval (every query × collection), post-retrieval (dedupe, rerank,
        grouping by document and, with `compress`, evidence and compression to `context_budget` estimated
        tokens, by default the backend's). Without `compress` (Retrieve) no sentence is embedded: at scale, a
        retrieval's sentences are mostly new to the cache, and embedding them costs more than the retrieval."""
        timings: dict[str, float] = {}
        trace_id_var.set(rec.trace_id)  # every LLM call made for this request carries it (llm_client)
        author = await self.find_author(options.author) if options.author else None

        async def expand() -> list[str]:
            return await self._step(
                "expand",
                expand_query(
                    self.llm,
                    query,
                    options.expand_queries,
                    timeout=self.settings.expand_timeout_s,
                    style=self.settings.prompt_format,
                ),
                [],
                timings,
                rec,
                {"query": query},
                lambda queries: {"queries": queries},
            )

        async def self_query() -> Named:
            authors = await self.authors()
            return await self._step(
                "self_query",
                extract_author(
                    self.llm,
                    query,
                    authors,
                    timeout=self.settings.self_query_timeout_s,
                    style=self.settings.prompt_format,
                ),
                Named(),
                timings,
                rec,
                {"query": query},
                lambda n: (
                    {"author": n.author.full_name if n.author else None}
                    | ({"unknown_person": n.unknown_person} if n.unknown_person else {})
                ),
            )

        expansions, detected = await asyncio.gather(
            expand() if options.expand_queries else _value([]),
            self_query() if options.self_query and author is None else _value(Named()),
        )
        if detected.unknown_person:
            # The cached author list may predate this author's ingestion: ask the store before declining.
            self.forget_authors()
            if found := resolve_name(detected.unknown_person, await self.authors()):
                detected = Named(found)
        author = author or detected.author
        queries = [query, *expansions]

        start = tick()
        vectors = await self.embedder.embed(queries)
        timings["embed"] = tick() - start
        rec.add_span("embed", start, tick(), {"queries": len(queries)}, metadata={"model": EMBEDDING_MODEL})

        start = tick()
        reranker = self.reranker if options.rerank else VectorOrder()
        runs = await search_all(
            self.store,
            vectors,
            options.kinds,
            self.settings.search_limit,
            author.id if author else None,
            with_vectors=reranker.name == "mmr",
        )
        timings["search"] = tick() - start
        for run in runs:
            rec.add_span(
                f"search:{run.kind.value}:{run.query_index}",
                run.start,
                run.end,
                {"query": queries[run.query_index], "author_id": author.id if author else None},
                {"hits": len(run.hits), "top_scores": [round(h.vector_score, 4) for h in run.hits[:3]]},
            )
        metrics.DOCUMENTS_RETRIEVED.observe(sum(len(r.hits) for r in runs))

        start = tick()
        candidates = dedupe(runs)
        documents = await reranker.rerank(query, vectors[0], candidates, options.top_k)
        timings["rerank"] = tick() - start
        rec.add_span(
            "rerank",
            start,
            tick(),
            {"candidates": len(candidates)},
            {"kept": [{"id": f"{d.chunk.document_id}#{d.chunk.chunk_index}", "score": d.score} for d in documents]},
            {"reranker": reranker.name},
        )

        sources = group_by_document(documents)
        if compress:
            start = tick()
            budget = self.context_budget(None) if context_budget is None else context_budget
            sources = await self.compressor.compress(vectors[0], sources, budget, query)
            timings["compress"] = tick() - start
            rec.add_span(
                "compress",
                start,
                tick(),
                {"documents": len({d.chunk.document_id for d in documents}), "budget_tokens": budget},
                {"sources": [{"number": s.number, "id": s.document_id, "text": s.text} for s in sources]},
            )
        for step, seconds in timings.items():
            metrics.STEP_SECONDS.labels(step).observe(seconds)
        return Retrieval(documents, queries, author, timings, sources, detected.unknown_person)

    async def answer(
        self,
        query: str,
        options: Options,
        parameters: llm_pb.GenerationParameters,
        request_id: str,
        deadline_s: float | None,
    ) -> AsyncGenerator[Retrieval | Delta | Final, None]:
        """Yields the Retrieval, then Deltas as the LLM produces them, then the Final."""
        start = tick()
        rec = self.tracer.start_trace(
            request_id,
            query,
            {
                "embedding_model": EMBEDDING_MODEL,
                "reranker": self.reranker.name if options.rerank else "none",
                "prompt_template_version": TEMPLATE_VERSION,
                "prompt_format": self.settings.prompt_format,
            },
        )
        trace_id_var.set(rec.trace_id)  # every LLM call made for this answer carries it (llm_client)
        try:
            info = await self.llm.model_info()
            retrieval = await self.retrieve(query, options, rec, context_budget=self.context_budget(info.backend))
            timings = retrieval.timings
            if retrieval.unknown_person and retrieval.author is None:
                # Someone else's writing would be the twin putting words in a stranger's mouth: say so instead.
                text = await self._not_an_author(retrieval.unknown_person)
                retrieval.documents, retrieval.sources = [], []
                yield retrieval
                yield Delta(text)
                total = tick() - start
                rec.set_output(text, {"unknown_person": retrieval.unknown_person})
                yield Final(
                    answer=text,
                    finish_reason=llm_pb.FINISH_REASON_END_OF_SEQUENCE,
                    prompt_tokens=0,
                    completion_tokens=0,
                    timings=timings,
                    trace_id=rec.trace_id if rec.sampled else "",
                    ttft_s=total,
                    total_s=total,
                    model_id="",
                )
                return

            parameters = self._parameters(parameters)
            budget = min(info.max_input_tokens, info.max_total_tokens - parameters.max_new_tokens)
            t0 = tick()
            try:
                built = await fit_prompt(
                    query,
                    retrieval.sources,
                    retrieval.author,
                    style=self.settings.prompt_format,
                    budget=budget,
                    count=self.llm.count_tokens,
                )
            except InvalidArgument:
                if budget >= info.max_input_tokens:
                    raise  # the question alone is over the model's input limit
                # It is the room max_new_tokens leaves that is too small, not the question that is too long.
                raise InvalidArgument(
                    {
                        "parameters.max_new_tokens": f"{parameters.max_new_tokens} new tokens leave {max(budget, 0)} "
                        f"of the model's {info.max_total_tokens} tokens for the prompt, too few for this question"
                    }
                ) from None
            timings["prompt"] = tick() - t0
            shown = (
                {"prompt": built.prompt.text} if built.prompt.text is not None else {"messages": built.prompt.messages}
            )
            rec.add_span(
                "prompt",
                t0,
                tick(),
                output=shown,
                metadata={"prompt_tokens": built.tokens, "dropped_sources": built.dropped, "budget": budget},
            )
            # The context event lists exactly the sources the prompt numbers.
            retrieval.sources = built.used
            yield retrieval

            t0 = tick()
            ttft = 0.0
            pieces: list[str] = []
            final: llm_pb.GenerationResult | None = None
            remaining = None if deadline_s is None else max(0.001, deadline_s - (tick() - start))
            stream = self.llm.stream(built.prompt, parameters, timeout=remaining)
            guard = LoopGuard() if self.settings.loop_guard else None
            async with aclosing(stream) as messages:  # leaving the block cancels the generation
                async for message in messages:
                    if message.HasField("final"):
                        final = message.final
                        break
                    pieces.append(message.token.text)
                    if guard is not None and guard.feed(message.token.text):
                        break
                    if not ttft:
                        ttft = tick() - start
                        metrics.ANSWER_TTFT.observe(ttft)
                    yield Delta(message.token.text)
            if guard is not None and guard.looping:
                metrics.LOOPS_STOPPED.inc()
                final = llm_pb.GenerationResult(
                    text=guard.answer,
                    finish_reason=llm_pb.FINISH_REASON_REPETITION,
                    usage=llm_pb.Usage(
                        prompt_tokens=built.tokens,
                        completion_tokens=len(pieces),
                        total_tokens=built.tokens + len(pieces),
                    ),
                    model_id=info.model_id,
                )
            if final is None:
                raise ServiceError("the LLM stream ended without a final message", reason="LLM_ERROR")
            timings["generate"] = tick() - t0
            metrics.STEP_SECONDS.labels("generate").observe(timings["generate"])
            rec.add_span(
                "generate",
                t0,
                tick(),
                shown,
                {"answer": final.text},
                {
                    "parameters": json_format.MessageToDict(parameters, preserving_proto_field_name=True),
                    "ttft_s": final.time_to_first_token_s,
                    "finish_reason": llm_pb.FinishReason.Name(final.finish_reason),
                },
                usage={
                    "prompt_tokens": final.usage.prompt_tokens,
                    "completion_tokens": final.usage.completion_tokens,
                    "total_tokens": final.usage.total_tokens,
                },
                model=final.model_id or info.model_id,
                type="llm",
            )
            total = tick() - start
            rec.set_output(final.text, {"llm_model": final.model_id or info.model_id})
            yield Final(
                answer=final.text,
                finish_reason=final.finish_reason,
                prompt_tokens=final.usage.prompt_tokens,
                completion_tokens=final.usage.completion_tokens,
                timings=timings,
                trace_id=rec.trace_id if rec.sampled else "",
                ttft_s=ttft or total,
                total_s=total,
                model_id=final.model_id or info.model_id,
                citations=cited(final.text, built.used),
            )
        except BaseException as exc:
            rec.set_error(exc if not isinstance(exc, GeneratorExit | asyncio.CancelledError) else "cancelled")
            raise
        finally:
            self.tracer.submit(rec)  # never blocks, never raises

    async def _not_an_author(self, person: str) -> str:
        """The answer to a question about a person whose writing is not in the store."""
        known = names_list([a.full_name for a in await self.authors()])
        return f"I don't know what {person} thinks: I can only answer from the writing of {known}."

    def _parameters(self, given: llm_pb.GenerationParameters) -> llm_pb.GenerationParameters:
        parameters = llm_pb.GenerationParameters()
        parameters.CopyFrom(given)
        if not parameters.HasField("max_new_tokens"):
            parameters.max_new_tokens = self.settings.default_max_new_tokens
        if not parameters.HasField("temperature"):
            parameters.temperature = self.settings.default_temperature
        if not parameters.HasField("repetition_penalty"):
            parameters.repetition_penalty = self.settings.default_repetition_penalty
        if not parameters.HasField("frequency_penalty") and self.settings.default_frequency_penalty:
            parameters.frequency_penalty = self.settings.default_frequency_penalty
        if not parameters.HasField("presence_penalty") and self.settings.default_presence_penalty:
            parameters.presence_penalty = self.settings.default_presence_penalty
        room = MAX_STOP_SEQUENCES - len(parameters.stop_sequences)
        parameters.stop_sequences.extend([s for s in STOP_SEQUENCES if s not in parameters.stop_sequences][:room])
        return parameters

    async def _step(self, name, work: Awaitable[T], fallback: T, timings, rec, input, output) -> T:  # type: ignore[no-untyped-def]
        """Runs an optional pre-retrieval step; any failure or timeout falls back and is only logged."""
        start = tick()
        error: BaseException | None = None
        try:
            result = await work
        except (TimeoutError, ServiceError) as exc:
            log.warning("%s failed, falling back: %s", name, exc)
            metrics.STEP_FALLBACKS.labels(name).inc()
            result, error = fallback, exc
        timings[name] = tick() - start
        rec.add_span(name, start, tick(), input, output(result), error=error)
        return result


async def _value(value: T) -> T:
    return value


def _log_failure(task: asyncio.Task[list[Author]]) -> None:
    # A background refresh has no caller to raise to: the stale list stays and the next request tries again.
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.warning("reading the author list failed: %s", exc)
