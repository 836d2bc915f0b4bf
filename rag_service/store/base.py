"""The vector-store interface, and the helpers both adapters share (names, point ids, payloads)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from rag_service.types import Author, Chunk, Kind, RetrievalMode, ScoredChunk, SearchFilter

VECTOR_SIZE = 384
MAX_AUTHORS = 100_000  # the author facet's limit: every author of a store
COPY_BATCH = 256  # points per scroll page when a collection is rebuilt (rag_service.migrate)
# Fixed forever: point ids derive from it, so changing it would duplicate every stored chunk.
POINT_NAMESPACE = uuid.UUID("6f1d8c2a-3b7e-5a41-9c0d-2e8f4b6a7c19")
# Payload fields with an index: the author filter, the author list, and per-document deletes.
KEYWORD_INDEXES = ("author_id", "author_full_name", "document_id")
# Hybrid search: how much deeper than the answer each of the two prefetches (dense, BM25) goes before fusion.
PREFETCH_FACTOR = 2


class VectorStore(Protocol):
    """Chunks and their vectors, one collection per content kind."""

    async def ensure_collections(self) -> None:
        """Create the missing collections (384-d cosine dense vectors and BM25 sparse vectors with the IDF
        modifier) and their payload indexes; idempotent. Existing collections are kept as they are."""
        ...

    async def upsert(self, chunks: Sequence[Chunk], vectors: Sequence[Sequence[float]]) -> int:
        """Write chunks with their vectors (one id per document and chunk index); returns the count."""
        ...

    async def delete_document(self, kind: Kind, document_id: str, from_chunk: int = 0) -> None:
        """Delete a document's chunks in one kind's collection whose chunk_index is >= from_chunk."""
        ...

    async def search(
        self,
        kind: Kind,
        vector: Sequence[float],
        limit: int,
        filter: SearchFilter | None = None,
        with_vectors: bool = False,
        *,
        text: str = "",
        mode: RetrievalMode = RetrievalMode.DENSE,
    ) -> list[ScoredChunk]:
        """The best chunks of one kind, best first, for the query's `vector` (dense), its `text` (BM25) or both
        (two prefetches fused by DBSF: each list's scores normalised by its mean and spread, then summed), the
        filter applied to each; score and vector_score are that search's score. A collection without BM25
        vectors (made before them) is searched dense-only."""
        ...

    async def sparse_kinds(self) -> set[Kind]:
        """The kinds whose collection has BM25 vectors (the others predate them: see add_sparse_vectors)."""
        ...

    async def add_sparse_vectors(self) -> list[Kind]:
        """Rebuild every collection without BM25 vectors into one with them, keeping every point, its dense
        vector and payload (BM25 comes from the stored text: nothing is embedded again); the rebuilt kinds."""
        ...

    async def authors(self) -> list[Author]:
        """Distinct authors across all collections, sorted by full name."""
        ...

    async def count(self, kind: Kind | None = None) -> int:
        """Number of chunks of one kind, or of all kinds."""
        ...

    async def check_health(self) -> bool:
        """True when the store answers."""
        ...

    async def aclose(self) -> None:
        """Release the store (flushes an embedded one to disk)."""
        ...


def collection_name(prefix: str, kind: Kind) -> str:
    """The collection holding one kind: "articles", "posts", "repositories" (after the prefix)."""
    return f"{prefix}{_PLURALS[kind]}"


_PLURALS = {Kind.ARTICLE: "articles", Kind.POST: "posts", Kind.REPOSITORY: "repositories"}


def point_id(document_id: str, chunk_index: int) -> str:
    """Deterministic point id, so re-ingesting a document overwrites its chunks instead of adding copies."""
    return str(uuid.uuid5(POINT_NAMESPACE, f"{document_id}:{chunk_index}"))


def chunk_payload(chunk: Chunk) -> dict[str, Any]:
    """The payload stored with a chunk."""
    return {
        "document_id": chunk.document_id,
        "kind": chunk.kind.value,
        "author_id": chunk.author_id,
        "author_full_name": chunk.author_full_name,
        "chunk_index": chunk.chunk_index,
        "content": chunk.content,
        "title": chunk.title,
        "link": chunk.link,
    }


def chunk_from_payload(payload: Mapping[str, Any]) -> Chunk:
    """The chunk a stored payload describes."""
    return Chunk(
        document_id=str(payload["document_id"]),
        kind=Kind(payload["kind"]),
        author_id=str(payload["author_id"]),
        author_full_name=str(payload["author_full_name"]),
        chunk_index=int(payload["chunk_index"]),
        content=str(payload["content"]),
        title=str(payload.get("title", "")),
        link=str(payload.get("link", "")),
    )


def scored_chunk(payload: Mapping[str, Any], score: float, vector: Sequence[float] | None) -> ScoredChunk:
    """A search hit as a domain object."""
    return ScoredChunk(
        chunk=chunk_from_payload(payload),
        vector_score=score,
        score=score,
        vector=tuple(vector) if vector is not None else None,
    )


def prefetch_limit(limit: int) -> int:
    """Hits each prefetch of a hybrid search takes before fusion."""
    return limit * PREFETCH_FACTOR


def dense_only_hint(name: str) -> str:
    """What the log says when a collection that predates BM25 vectors is asked for a sparse or hybrid search."""
    return (
        f"collection {name} has no BM25 vectors (made before hybrid search): searching it dense-only; "
        "rebuild it with `python -m rag_service.migrate` (keeps every point)"
    )


def check_upsert(chunks: Sequence[Chunk], vectors: Sequence[Sequence[float]]) -> None:
    """Reject mismatched inputs before anything is written."""
    if len(chunks) != len(vectors):
        raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
    for vector in vectors:
        if len(vector) != VECTOR_SIZE:
            raise ValueError(f"vector of size {len(vector)}, expected {VECTOR_SIZE}")


def sort_authors(authors: dict[str, str]) -> list[Author]:
    """Authors from an id → full name map, sorted by name then id."""
    return sorted((Author(id=i, full_name=n) for i, n in authors.items()), key=lambda a: (a.full_name, a.id))
