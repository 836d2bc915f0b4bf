"""The advanced RAG pipeline: pre-retrieval, retrieval, post-retrieval, augmentation, generation, tracing."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Awaitable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import TypeVar

from google.protobuf import json_format

from llmtwin.llm.v1 import llm_service_pb2 as llm_pb
from rag_service import metrics
from rag_service.embedding import Embedder
from rag_service.errors import InvalidArgument, ServiceError
from rag_service.llm_client import LlmClient
from rag_service.pipeline.expand import expand_query
from rag_service.pipeline.prompt import TEMPLATE_VERSION, fit_prompt
from rag_service.pipeline.rerank import Reranker, VectorOrder
from rag_service.pipeline.search import dedupe, search_all
from rag_service.pipeline.self_query import extract_author, normalize
from rag_service.settings import Settings
from rag_service.store.base import VectorStore
from rag_service.tracing import Tracer, TraceRecorder
from rag_service.types import Author, Kind, ScoredChunk

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
    """The ranked context and how it was found."""

    documents: list[ScoredChunk]
    queries: list[str]
    author: Author | None
    timings: dict[str, float] = field(default_factory=dict)


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
        self._authors: list[Author] | None = None

    async def authors(self) -> list[Author]:
        """Authors in the store (cached; ingestion refreshes it)."""
        if self._authors is None:
            self._authors = await self.store.authors()
        return self._authors

    def forget_authors(self) -> None:
        """Drops the author cache after the store changed."""
        self._authors = None

    async def find_author(self, name: str) -> Author:
        """The store's author with this id or full name; InvalidArgument for an unknown one."""
        wanted = normalize(name)
        authors = await self.authors()
        for author in authors:
            if wanted in (normalize(author.id), normalize(author.full_name)):
                return author
        known = ", ".join(a.full_name for a in authors) or "none yet"
        raise InvalidArgument({"options.author": f"unknown author {name!r}; authors in the store: {known}"})

    async def retrieve(self, query: str, options: Options, rec: TraceRecorder) -> Retrieval:
        """Pre-retrieval (concurrently), retrieval (every query × collection), post-retrieval."""
        timings: dict[str, float] = {}
        author = await self.find_author(options.author) if options.author else None

        async def expand() -> list[str]:
            return await self._step(
                "expand",
                expand_query(
                    self.llm,
                    query,
                    options.expand_queries,
                    timeout=self.settings.expand_timeout_s,
                    request_id=rec.request_id,
                ),
                [],
                timings,
                rec,
                {"query": query},
                lambda queries: {"queries": queries},
            )

        async def self_query() -> Author | None:
            authors = await self.authors()
            return await self._step(
                "self_query",
                extract_author(
                    self.llm, query, authors, timeout=self.settings.self_query_timeout_s, request_id=rec.request_id
                ),
                None,
                timings,
                rec,
                {"query": query},
                lambda a: {"author": a.full_name if a else None},
            )

        expansions, detected = await asyncio.gather(
            expand() if options.expand_queries else _value([]),
            self_query() if options.self_query and author is None else _value(None),
        )
        author = author or detected
        queries = [query, *expansions]

        start = time.perf_counter()
        vectors = await self.embedder.embed(queries)
        timings["embed"] = time.perf_counter() - start
        rec.add_span(
            "embed", start, time.perf_counter(), {"queries": len(queries)}, metadata={"model": EMBEDDING_MODEL}
        )

        start = time.perf_counter()
        reranker = self.reranker if options.rerank else VectorOrder()
        runs = await search_all(
            self.store,
            vectors,
            options.kinds,
            self.settings.search_limit,
            author.id if author else None,
            with_vectors=reranker.name == "mmr",
        )
        timings["search"] = time.perf_counter() - start
        for run in runs:
            rec.add_span(
                f"search:{run.kind.value}:{run.query_index}",
                run.start,
                run.end,
                {"query": queries[run.query_index], "author_id": author.id if author else None},
                {"hits": len(run.hits), "top_scores": [round(h.vector_score, 4) for h in run.hits[:3]]},
            )
        metrics.DOCUMENTS_RETRIEVED.observe(sum(len(r.hits) for r in runs))

        start = time.perf_counter()
        candidates = dedupe(runs)
        documents = await reranker.rerank(query, vectors[0], candidates, options.top_k)
        timings["rerank"] = time.perf_counter() - start
        rec.add_span(
            "rerank",
            start,
            time.perf_counter(),
            {"candidates": len(candidates)},
            {"kept": [{"id": f"{d.chunk.document_id}#{d.chunk.chunk_index}", "score": d.score} for d in documents]},
            {"reranker": reranker.name},
        )
        for step, seconds in timings.items():
            metrics.STEP_SECONDS.labels(step).observe(seconds)
        return Retrieval(documents, queries, author, timings)

    async def answer(
        self,
        query: str,
        options: Options,
        parameters: llm_pb.GenerationParameters,
        request_id: str,
        deadline_s: float | None,
    ) -> AsyncGenerator[Retrieval | Delta | Final, None]:
        """Yields the Retrieval, then Deltas as the LLM produces them, then the Final."""
        start = time.perf_counter()
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
        try:
            retrieval = await self.retrieve(query, options, rec)
            yield retrieval
            timings = retrieval.timings

            parameters = self._parameters(parameters)
            info = await self.llm.model_info()
            budget = min(info.max_input_tokens, info.max_total_tokens - parameters.max_new_tokens)
            t0 = time.perf_counter()
            built = await fit_prompt(
                query,
                retrieval.documents,
                retrieval.author,
                style=self.settings.prompt_format,
                budget=budget,
                count=self.llm.count_tokens,
            )
            timings["prompt"] = time.perf_counter() - t0
            shown = (
                {"prompt": built.prompt.text} if built.prompt.text is not None else {"messages": built.prompt.messages}
            )
            rec.add_span(
                "prompt",
                t0,
                time.perf_counter(),
                output=shown,
                metadata={"prompt_tokens": built.tokens, "truncated_chunks": built.dropped, "budget": budget},
            )

            t0 = time.perf_counter()
            ttft = 0.0
            pieces: list[str] = []
            final: llm_pb.GenerationResult | None = None
            remaining = None if deadline_s is None else max(0.001, deadline_s - (time.perf_counter() - start))
            metadata = (("x-request-id", request_id), ("x-trace-id", rec.trace_id))
            stream = self.llm.stream(
                built.prompt, parameters, metadata=metadata, timeout=remaining, request_id=request_id
            )
            async with aclosing(stream) as messages:
                async for message in messages:
                    if message.HasField("final"):
                        final = message.final
                        break
                    if not ttft:
                        ttft = time.perf_counter() - start
                        metrics.ANSWER_TTFT.observe(ttft)
                    pieces.append(message.token.text)
                    yield Delta(message.token.text)
            if final is None:
                raise ServiceError("the LLM stream ended without a final message", reason="LLM_ERROR")
            timings["generate"] = time.perf_counter() - t0
            metrics.STEP_SECONDS.labels("generate").observe(timings["generate"])
            rec.add_span(
                "generate",
                t0,
                time.perf_counter(),
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
            total = time.perf_counter() - start
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
            )
        except BaseException as exc:
            rec.set_error(exc if not isinstance(exc, GeneratorExit | asyncio.CancelledError) else "cancelled")
            raise
        finally:
            self.tracer.submit(rec)  # never blocks, never raises

    def _parameters(self, given: llm_pb.GenerationParameters) -> llm_pb.GenerationParameters:
        parameters = llm_pb.GenerationParameters()
        parameters.CopyFrom(given)
        if not parameters.HasField("max_new_tokens"):
            parameters.max_new_tokens = self.settings.default_max_new_tokens
        if not parameters.HasField("temperature"):
            parameters.temperature = self.settings.default_temperature
        return parameters

    async def _step(self, name, work: Awaitable[T], fallback: T, timings, rec, input, output) -> T:  # type: ignore[no-untyped-def]
        """Runs an optional pre-retrieval step; any failure or timeout falls back and is only logged."""
        start = time.perf_counter()
        error: BaseException | None = None
        try:
            result = await work
        except (TimeoutError, ServiceError) as exc:
            log.warning("%s failed, falling back: %s", name, exc)
            metrics.STEP_FALLBACKS.labels(name).inc()
            result, error = fallback, exc
        timings[name] = time.perf_counter() - start
        rec.add_span(name, start, time.perf_counter(), input, output(result), error=error)
        return result


async def _value(value: T) -> T:
    return value
