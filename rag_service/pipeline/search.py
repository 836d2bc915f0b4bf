"""Retrieval: every query against every collection, concurrently, filtered by author when one is known; dense,
BM25 or hybrid (both fused) as the request's retrieval mode says."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from rag_service.store.base import VectorStore
from rag_service.tracing import Tick, tick
from rag_service.types import Kind, RetrievalMode, ScoredChunk, SearchFilter


@dataclass(frozen=True, slots=True)
class SearchRun:
    """One (query, kind) search: its hits and how long it took."""

    query_index: int
    kind: Kind
    hits: list[ScoredChunk]
    start: Tick
    end: Tick


async def search_all(
    store: VectorStore,
    vectors: Sequence[Sequence[float]],
    kinds: Sequence[Kind],
    limit: int,
    author_id: str | None,
    with_vectors: bool,
    *,
    queries: Sequence[str] = (),
    mode: RetrievalMode = RetrievalMode.DENSE,
) -> list[SearchRun]:
    """Runs len(vectors) × len(kinds) searches at once; `queries` are the texts of the vectors (BM25)."""
    filter = SearchFilter(author_id=author_id) if author_id else None
    if mode is not RetrievalMode.DENSE and len(queries) != len(vectors):
        raise ValueError(f"{len(vectors)} query vectors but {len(queries)} query texts")

    async def one(i: int, vector: Sequence[float], kind: Kind) -> SearchRun:
        start = tick()
        text = queries[i] if i < len(queries) else ""
        hits = await store.search(kind, vector, limit, filter, with_vectors=with_vectors, text=text, mode=mode)
        return SearchRun(i, kind, hits, start, tick())

    return list(await asyncio.gather(*(one(i, v, k) for i, v in enumerate(vectors) for k in kinds)))


def dedupe(runs: Sequence[SearchRun]) -> list[ScoredChunk]:
    """One entry per chunk (the best-scoring hit), and none with the same text as a better one."""
    best: dict[tuple[str, int], ScoredChunk] = {}
    for run in runs:
        for hit in run.hits:
            key = (hit.chunk.document_id, hit.chunk.chunk_index)
            if key not in best or hit.vector_score > best[key].vector_score:
                best[key] = hit
    seen_text: set[str] = set()
    out: list[ScoredChunk] = []
    for hit in sorted(best.values(), key=lambda h: h.vector_score, reverse=True):
        text = " ".join(hit.chunk.content.split()).lower()
        if text not in seen_text:
            seen_text.add(text)
            out.append(hit)
    return out
