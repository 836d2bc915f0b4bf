"""Embedded store on qdrant-edge: Qdrant's Rust engine in process, one shard directory per collection."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import qdrant_edge as qe

from rag_service.errors import StoreLocked
from rag_service.store.base import (
    KEYWORD_INDEXES,
    VECTOR_SIZE,
    check_upsert,
    chunk_payload,
    collection_name,
    point_id,
    scored_chunk,
    sort_authors,
)
from rag_service.types import Author, Chunk, Kind, ScoredChunk, SearchFilter

T = TypeVar("T")
_MAX_AUTHORS = 100_000


class EdgeStore:
    """VectorStore on qdrant-edge shards at `{path}/{collection}`; one process at a time (WAL lock)."""

    def __init__(self, path: str | Path, collection_prefix: str = "", search_threads: int = 1) -> None:
        self._root = Path(path)
        self._prefix = collection_prefix
        self._search_threads = search_threads
        self._shards: dict[Kind, qe.EdgeShard] = {}
        # One worker thread: the engine is called synchronously, and a single caller keeps it single-writer.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qdrant-edge")
        self._closed = False

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        if self._closed:
            raise RuntimeError("store is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _ready(self) -> dict[Kind, qe.EdgeShard]:
        if len(self._shards) < len(Kind):
            await self.ensure_collections()
        return self._shards

    async def ensure_collections(self) -> None:
        """Open or create a shard per kind, with its payload indexes."""
        await self._run(self._open_all)

    def _open_all(self) -> None:
        config = qe.EdgeConfig(
            vectors=qe.EdgeVectorParams(size=VECTOR_SIZE, distance=qe.Distance.Cosine),
            max_search_threads=self._search_threads,
        )
        for kind in Kind:
            if kind in self._shards:
                continue
            path = self._root / collection_name(self._prefix, kind)
            try:
                # `load` with the config also checks that an existing shard has the same vector size.
                if (path / "edge_config.json").exists():
                    shard = qe.EdgeShard.load(str(path), config)
                else:
                    path.mkdir(parents=True, exist_ok=True)
                    shard = qe.EdgeShard.create(str(path), config)
            except Exception as error:
                if "WouldBlock" in str(error):  # another process holds the shard's WAL lock
                    raise StoreLocked(
                        f"the store at {self._root} is open in another process (a running RAG service?)"
                    ) from error
                raise
            indexed = shard.info().payload_schema
            for field in KEYWORD_INDEXES:
                if field not in indexed:
                    shard.update(qe.UpdateOperation.create_field_index(field, qe.PayloadSchemaType.Keyword))
            self._shards[kind] = shard

    async def upsert(self, chunks: Sequence[Chunk], vectors: Sequence[Sequence[float]]) -> int:
        """Write chunks with their vectors; a chunk already stored is overwritten."""
        check_upsert(chunks, vectors)
        shards = await self._ready()
        by_kind: dict[Kind, list[qe.Point]] = {}
        for chunk, vector in zip(chunks, vectors, strict=True):
            point = qe.Point(point_id(chunk.document_id, chunk.chunk_index), list(vector), chunk_payload(chunk))
            by_kind.setdefault(chunk.kind, []).append(point)

        def write() -> None:
            for kind, points in by_kind.items():
                shards[kind].update(qe.UpdateOperation.upsert_points(points))

        await self._run(write)
        return len(chunks)

    async def delete_document(self, kind: Kind, document_id: str, from_chunk: int = 0) -> None:
        """Delete a document's chunks with chunk_index >= from_chunk."""
        shard = (await self._ready())[kind]
        of_document = qe.FieldCondition("document_id", match=qe.MatchValue(document_id))
        if from_chunk > 0:
            tail = qe.FieldCondition("chunk_index", range=qe.RangeFloat(gte=from_chunk))
            where = qe.Filter(must=[of_document, tail])
        else:
            where = qe.Filter(must=[of_document])
        operation = qe.UpdateOperation.delete_points_by_filter(where)
        await self._run(shard.update, operation)

    async def search(
        self,
        kind: Kind,
        vector: Sequence[float],
        limit: int,
        filter: SearchFilter | None = None,
        with_vectors: bool = False,
    ) -> list[ScoredChunk]:
        """Nearest chunks of one kind by cosine similarity, optionally restricted to an author."""
        shard = (await self._ready())[kind]
        where = None
        if filter is not None and filter.author_id is not None:
            where = qe.Filter(must=[qe.FieldCondition("author_id", match=qe.MatchValue(filter.author_id))])
        request = qe.QueryRequest(
            limit=limit,
            query=qe.Query.Nearest(list(vector)),
            filter=where,
            with_payload=True,
            with_vector=with_vectors,
        )
        hits = await self._run(shard.query, request)
        return [
            scored_chunk(hit.payload or {}, hit.score, hit.vector if with_vectors else None)  # type: ignore[arg-type]
            for hit in hits
        ]

    async def authors(self) -> list[Author]:
        """Distinct authors: a facet on author_id per shard, then one point per new author for its name."""
        shards = await self._ready()

        def collect() -> dict[str, str]:
            found: dict[str, str] = {}
            for shard in shards.values():
                facet = shard.facet(qe.FacetRequest("author_id", limit=_MAX_AUTHORS, exact=True))
                for hit in facet.hits:
                    author_id = str(hit.value)
                    if author_id in found:
                        continue
                    match = qe.Filter(must=[qe.FieldCondition("author_id", match=qe.MatchValue(author_id))])
                    records, _ = shard.scroll(
                        qe.ScrollRequest(limit=1, filter=match, with_payload=["author_full_name"])
                    )
                    if records:
                        found[author_id] = str((records[0].payload or {}).get("author_full_name", ""))
            return found

        return sort_authors(await self._run(collect))

    async def count(self, kind: Kind | None = None) -> int:
        """Number of stored chunks of one kind, or of all kinds."""
        shards = await self._ready()
        selected = [shards[kind]] if kind is not None else list(shards.values())
        return await self._run(lambda: sum(s.count(qe.CountRequest(exact=True)) for s in selected))

    async def check_health(self) -> bool:
        """True when every shard is open and answers a count."""
        try:
            await self.count()
        except Exception:
            return False
        return True

    async def aclose(self) -> None:
        """Flush and close the shards, then stop the worker thread; idempotent."""
        if self._closed:
            return

        def close_all() -> None:
            for shard in self._shards.values():
                shard.flush()
                shard.close()
            self._shards.clear()

        await self._run(close_all)
        self._closed = True
        self._executor.shutdown(wait=False)
