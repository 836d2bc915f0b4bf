"""The advanced RAG pipeline: pre-retrieval, retrieval, post-retrieval, augmentation, generation, tracing."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, TypeVar

from rag_service import metrics
from rag_service.authors import AuthorList
from rag_service.conversation import Conversation
from rag_service.embedding import Embedder
from rag_service.generation import Delta, Final, answer_prompt, author_adapter, generate, shown, with_defaults
from rag_service.llm_client import LlmClient
from rag_service.pipeline.compress import Compressor
from rag_service.pipeline.condense import lexical_standalone, llm_standalone
from rag_service.pipeline.expand import expand_query
from rag_service.pipeline.loops import LoopGuard
from rag_service.pipeline.prompt import TEMPLATE_VERSION, names_list
from rag_service.pipeline.rerank import Reranker, VectorOrder
from rag_service.pipeline.search import dedupe, search_all
from rag_service.pipeline.self_query import Named, extract_author, match_author, resolve_name
from rag_service.pipeline.sources import Source, cited, group_by_document
from rag_service.settings import Settings, parse_author_adapters
from rag_service.steps import Steps
from rag_service.store.base import VectorStore
from rag_service.tracing import Tracer, TraceRecorder, tick
from rag_service.types import (
    Author,
    BackendKind,
    FinishReason,
    Generation,
    GenerationParameters,
    Kind,
    RetrievalMode,
    ScoredChunk,
    Usage,
)
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
    retrieval_mode: RetrievalMode = RetrievalMode.DENSE


@dataclass(slots=True)
class Retrieval:
    """The ranked context and how it was found: chunks best first, and the same grouped by document."""

    documents: list[ScoredChunk]
    queries: list[str]
    author: Author | None
    timings: dict[str, float] = field(default_factory=dict)
    sources: list[Source] = field(default_factory=list)
    unknown_person: str = ""  # a person the query asks about who is not an author in the store
    standalone_query: str = ""  # the question as searched (a follow-up rewritten from the conversation)


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
        self.author_list = AuthorList(store, settings.authors_refresh_s)
        self.author_adapters = parse_author_adapters(settings.author_adapters)  # author id -> its twin's adapter

    async def authors(self) -> list[Author]:
        """Authors in the store (AuthorList: cached per replica, refreshed in the background)."""
        return await self.author_list.get()

    def forget_authors(self) -> None:
        """Drops the author cache after the store changed (ingestion through this replica)."""
        self.author_list.forget()

    def context_budget(self, backend: BackendKind | None) -> int:
        """Estimated tokens of context the prompt gets (0: whole chunks), by LLM backend kind when known."""
        if self.settings.context_tokens >= 0:
            return self.settings.context_tokens
        if backend is None:
            info = self.llm.cached_info
            backend = info.backend if info is not None else BackendKind.EMBEDDED
        if backend == BackendKind.EMBEDDED:
            return self.settings.context_tokens_embedded
        return self.settings.context_tokens_remote

    def condense_mode(self, backend: BackendKind | None) -> str:
        """How a follow-up becomes a standalone query with this LLM backend kind (lexical, llm or off)."""
        if backend is None:
            info = self.llm.cached_info
            backend = info.backend if info is not None else BackendKind.EMBEDDED
        return self.settings.condense_embedded if backend == BackendKind.EMBEDDED else self.settings.condense_remote

    async def standalone(self, query: str, conversation: Conversation, mode: str, steps: Steps) -> str:
        """The "condense" step: the follow-up as a standalone search query (the query itself without history)."""
        if not conversation.questions or mode == "off":
            return query
        lexical = lexical_standalone(query, conversation)
        if mode != "llm":
            with steps.step("condense", {"query": query}, metadata={"mode": mode}) as step:
                step.output = {"standalone_query": lexical}
            return lexical

        async def rewrite() -> str:
            timeout, style = self.settings.condense_timeout_s, self.settings.prompt_format
            try:
                return await llm_standalone(self.llm, query, conversation, timeout=timeout, style=style)
            except ValueError as exc:  # an answer that is not a question: the lexical rewrite instead
                log.info("condense: %s", exc)
                return lexical

        asked = {"query": query, "turns": len(conversation.dialogue)}
        return await steps.optional("condense", rewrite(), lexical, asked, lambda q: {"standalone_query": q})

    async def retrieve(
        self,
        query: str,
        options: Options,
        rec: TraceRecorder,
        *,
        context_budget: int | None = None,
        compress: bool = True,
        conversation: Conversation | None = None,
        condense: str | None = None,
    ) -> Retrieval:
        """Pre-retrieval (concurrently), retrieval (every query × collection), post-retrieval (dedupe, rerank,
        grouping by document and, with `compress`, evidence and compression to `context_budget` estimated
        tokens, by default the backend's). Without `compress` (Retrieve) no sentence is embedded: at scale, a
        retrieval's sentences are mostly new to the cache, and embedding them costs more than the retrieval.
        With a `conversation`, a follow-up is searched as a standalone query (`condense`: lexical, llm or off;
        default: the backend's setting), and self-query falls back on the authors its earlier questions name."""
        steps = Steps(rec)
        trace_id_var.set(rec.trace_id)  # every LLM call made for this request carries it (llm_client)
        conversation = conversation or Conversation()
        author = await self.author_list.find(options.author) if options.author else None
        asked_query = query
        query = await self.standalone(query, conversation, condense or self.condense_mode(None), steps)
        settings, asked = self.settings, {"query": query}

        async def expand() -> list[str]:
            n, timeout = options.expand_queries, settings.expand_timeout_s
            work = expand_query(self.llm, query, n, timeout=timeout, style=settings.prompt_format)
            return await steps.optional("expand", work, [], asked, lambda queries: {"queries": queries})

        async def self_query() -> Named:
            authors, timeout = await self.authors(), settings.self_query_timeout_s
            work = extract_author(self.llm, asked_query, authors, timeout=timeout, style=settings.prompt_format)
            named = await steps.optional("self_query", work, Named(), {"query": asked_query}, _named)
            if named.author is None and not named.unknown_person:
                # A follow-up about an author named in an earlier question ("what did she measure?").
                earlier = (match_author(q, authors) for q in conversation.questions)
                named = Named(next((a for a in earlier if a is not None), None))
            return named

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

        with steps.step("embed", {"queries": len(queries)}, metadata={"model": EMBEDDING_MODEL}):
            vectors = await self.embedder.embed(queries)

        reranker = self.reranker if options.rerank else VectorOrder()
        with steps.step("search", span=False):  # one span per search, below
            runs = await search_all(
                self.store,
                vectors,
                options.kinds,
                settings.search_limit,
                author.id if author else None,
                with_vectors=reranker.name == "mmr",
                queries=queries,
                mode=options.retrieval_mode,
            )
        for run in runs:
            rec.add_span(
                f"search:{run.kind.value}:{run.query_index}",
                run.start,
                run.end,
                {
                    "query": queries[run.query_index],
                    "author_id": author.id if author else None,
                    "mode": options.retrieval_mode.value,
                },
                {"hits": len(run.hits), "top_scores": [round(h.vector_score, 4) for h in run.hits[:3]]},
            )
        metrics.DOCUMENTS_RETRIEVED.observe(sum(len(r.hits) for r in runs))

        candidates = dedupe(runs)
        with steps.step("rerank", {"candidates": len(candidates)}, metadata={"reranker": reranker.name}) as step:
            documents = await reranker.rerank(query, vectors[0], candidates, options.top_k)
            step.output = {
                "kept": [{"id": f"{d.chunk.document_id}#{d.chunk.chunk_index}", "score": d.score} for d in documents]
            }

        sources = group_by_document(documents)
        if compress:
            budget = self.context_budget(None) if context_budget is None else context_budget
            shape = {"documents": len({d.chunk.document_id for d in documents}), "budget_tokens": budget}
            with steps.step("compress", shape) as step:
                sources = await self.compressor.compress(vectors[0], sources, budget, query)
                step.output = {"sources": [{"number": s.number, "id": s.document_id, "text": s.text} for s in sources]}
        return Retrieval(documents, queries, author, steps.timings, sources, detected.unknown_person, query)

    async def answer(
        self,
        query: str,
        options: Options,
        parameters: GenerationParameters,
        request_id: str,
        deadline_s: float | None,
        conversation: Conversation | None = None,
    ) -> AsyncGenerator[Retrieval | Delta | Final, None]:
        """Yields the Retrieval, then Deltas as the LLM produces them, then the Final. With a `conversation`,
        the follow-up is searched as a standalone query and its earlier turns go into the prompt."""
        start = tick()
        conversation = conversation or Conversation()
        metadata: dict[str, Any] = {
            "embedding_model": EMBEDDING_MODEL,
            "reranker": self.reranker.name if options.rerank else "none",
            "prompt_template_version": TEMPLATE_VERSION,
            "prompt_format": self.settings.prompt_format,
        }
        if conversation.turns or conversation.conversation_id:
            metadata |= {
                "conversation_id": conversation.conversation_id or None,
                "history_turns": len(conversation.turns),
                "history": conversation.shown(),
            }
        rec = self.tracer.start_trace(request_id, query, metadata, thread_id=conversation.conversation_id or None)
        trace_id_var.set(rec.trace_id)  # every LLM call made for this answer carries it (llm_client)
        try:
            info = await self.llm.model_info()
            retrieval = await self.retrieve(
                query,
                options,
                rec,
                context_budget=self.context_budget(info.backend),
                conversation=conversation,
                condense=self.condense_mode(info.backend),
            )
            rec.annotate({"standalone_query": retrieval.standalone_query})
            steps = Steps(rec, retrieval.timings)

            def final(generation: Generation, ttft: float, citations: list[Source]) -> Final:
                total = tick() - start
                return Final(
                    answer=generation.text,
                    finish_reason=generation.finish_reason,
                    prompt_tokens=generation.usage.prompt_tokens,
                    completion_tokens=generation.usage.completion_tokens,
                    timings=steps.timings,
                    trace_id=rec.trace_id if rec.sampled else "",
                    ttft_s=ttft or total,
                    total_s=total,
                    model_id=generation.model_id,
                    request_id=request_id,
                    citations=citations,
                )

            if retrieval.unknown_person and retrieval.author is None:
                # Someone else's writing would be the twin putting words in a stranger's mouth: say so instead.
                text = await self._not_an_author(retrieval.unknown_person)
                retrieval.documents, retrieval.sources = [], []
                yield retrieval
                yield Delta(text)
                rec.set_output(text, {"unknown_person": retrieval.unknown_person})
                yield final(Generation(text, FinishReason.END_OF_SEQUENCE, Usage()), 0.0, [])
                return

            parameters = with_defaults(parameters, self.settings)
            with steps.step("prompt") as step:
                built, budget = await answer_prompt(
                    query,
                    retrieval.sources,
                    retrieval.author,
                    parameters,
                    info,
                    style=self.settings.prompt_format,
                    count=self.llm.count_tokens,
                    conversation=conversation,
                )
                step.output = shown(built.prompt)
                step.metadata = {
                    "prompt_tokens": built.tokens,
                    "dropped_sources": built.dropped,
                    "budget": budget,
                    "history_turns": built.history_used,
                    "dropped_turns": built.history_dropped,
                }
            # The context event lists exactly the sources the prompt numbers.
            retrieval.sources = built.used
            yield retrieval

            ttft = 0.0
            remaining = None if deadline_s is None else max(0.001, deadline_s - (tick() - start))
            guard = LoopGuard() if self.settings.loop_guard else None
            adapter = author_adapter(retrieval.author, self.author_adapters, info)
            rec.annotate({"adapter": adapter or None})  # which twin answered (None: the base model)
            # Leaving the block cancels the generation.
            generation_events = generate(self.llm, steps, built, parameters, info, remaining, guard, adapter)
            async with aclosing(generation_events) as events:
                async for event in events:
                    if isinstance(event, Generation):
                        generation = event
                        break
                    if not ttft:
                        ttft = tick() - start
                        metrics.ANSWER_TTFT.observe(ttft)
                    yield Delta(event.text)
            rec.set_output(generation.text, {"llm_model": generation.model_id})
            yield final(generation, ttft, cited(generation.text, built.used))
        except BaseException as exc:
            rec.set_error(exc if not isinstance(exc, GeneratorExit | asyncio.CancelledError) else "cancelled")
            raise
        finally:
            self.tracer.submit(rec)  # never blocks, never raises

    async def _not_an_author(self, person: str) -> str:
        """The answer to a question about a person whose writing is not in the store."""
        known = names_list([a.full_name for a in await self.authors()])
        return f"I don't know what {person} thinks: I can only answer from the writing of {known}."


async def _value(value: T) -> T:
    return value


def _named(named: Named) -> dict[str, str | None]:
    """What the self-query span shows."""
    found = {"author": named.author.full_name if named.author else None}
    return found | ({"unknown_person": named.unknown_person} if named.unknown_person else {})
