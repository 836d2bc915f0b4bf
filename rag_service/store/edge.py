"""Embedded store on qdrant-edge: Qdrant's Rust engine in process, one shard directory per collection."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import qdrant_edge as qe

from rag_service.errors import StoreLocked
from rag_service.store.base import (
    COPY_BATCH,
    KEYWORD_INDEXES,
    MAX_AUTHORS,
    VECTOR_SIZE,
    check_upsert,
    chunk_from_payload,
    chunk_payload,
    collection_name,
    dense_only_hint,
    point_id,
    prefetch_limit,
    scored_chunk,
    sort_authors,
)
from rag_service.store.bm25 import SPARSE_VECTOR, document_vector, query_vector
from rag_service.types import Author, Chunk, Kind, RetrievalMode, ScoredChunk, SearchFilter

log = logging.getLogger(__name__)
T = TypeVar("T")


class EdgeStore:
    """VectorStore on qdrant-edge shards at `{path}/{collection}`; one process at a time (WAL lock)."""

    def __init__(self, path: str | Path, collection_prefix: str = "", search_threads: int = 1) -> None:
        self._root = Path(path)
        self._prefix = collection_prefix
        self._search_threads = search_threads
        self._shards: dict[Kind, qe.EdgeShard] = {}
        self._sparse: set[Kind] = set()  # kinds whose shard has BM25 vectors
        self._hinted: set[Kind] = set()
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

    def _config(self, sparse: bool) -> qe.EdgeConfig:
        # Without sparse_vectors, `load` inherits what the shard has (a shard made before BM25 has none).
        return qe.EdgeConfig(
            vectors=qe.EdgeVectorParams(size=VECTOR_SIZE, distance=qe.Distance.Cosine),
            sparse_vectors={SPARSE_VECTOR: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)} if sparse else None,
            max_search_threads=self._search_threads,
        )

    def _open_all(self) -> None:
        for kind in Kind:
            if kind in self._shards:
                continue
            path = self._root / collection_name(self._prefix, kind)
            try:
                # `load` with the config also checks that an existing shard has the same vector size.
                if (path / "edge_config.json").exists():
                    shard = qe.EdgeShard.load(str(path), self._config(sparse=False))
                else:
                    path.mkdir(parents=True, exist_ok=True)
                    shard = qe.EdgeShard.create(str(path), self._config(sparse=True))
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
            if _has_sparse(path):
                self._sparse.add(kind)

    async def upsert(self, chunks: Sequence[Chunk], vectors: Sequence[Sequence[float]]) -> int:
        """Write chunks with their vectors; a chunk already stored is overwritten."""
        check_upsert(chunks, vectors)
        shards = await self._ready()
        by_kind: dict[Kind, list[qe.Point]] = {}
        for chunk, vector in zip(chunks, vectors, strict=True):
            dense = list(vector)
            point = qe.Point(
                point_id(chunk.document_id, chunk.chunk_index),
                {"": dense, SPARSE_VECTOR: _sparse(*document_vector(chunk.content))}
                if chunk.kind in self._sparse
                else dense,
                chunk_payload(chunk),
            )
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
        *,
        text: str = "",
        mode: RetrievalMode = RetrievalMode.DENSE,
    ) -> list[ScoredChunk]:
        """Best chunks of one kind: cosine (dense), BM25 (sparse) or both fused by DBSF (hybrid), author-filtered."""
        shard = (await self._ready())[kind]
        where = None
        if filter is not None and filter.author_id is not None:
            where = qe.Filter(must=[qe.FieldCondition("author_id", match=qe.MatchValue(filter.author_id))])
        if mode is not RetrievalMode.DENSE and kind not in self._sparse:
            if kind not in self._hinted:
                self._hinted.add(kind)
                log.warning(dense_only_hint(collection_name(self._prefix, kind)))
            mode = RetrievalMode.DENSE
        dense = qe.Query.Nearest(list(vector))
        if mode is RetrievalMode.DENSE:
            query: Any = dense  # the stubs type Fusion.Dbsf as a Fusion only
            prefetches = None
        else:
            sparse = qe.Query.Nearest(_sparse(*query_vector(text)), using=SPARSE_VECTOR)
            if mode is RetrievalMode.SPARSE:
                query, prefetches = sparse, None
            else:
                # Each prefetch goes deeper than the answer, so that a chunk second in one list can still win.
                depth = prefetch_limit(limit)
                # DBSF, not RRF: rank-only RRF scores tie across collections and lost on both question sets.
                query = qe.Fusion.Dbsf()
                prefetches = [
                    qe.Prefetch(limit=depth, query=dense, filter=where),
                    qe.Prefetch(limit=depth, query=sparse, filter=where),
                ]
        request = qe.QueryRequest(
            limit=limit,
            query=query,
            prefetches=prefetches,
            filter=where,
            with_payload=True,
            with_vector=with_vectors,
        )
        hits = await self._run(shard.query, request)
        return [
            scored_chunk(hit.payload or {}, hit.score, _dense(hit.vector) if with_vectors else None)  # type: ignore[arg-type]
            for hit in hits
        ]

    async def sparse_kinds(self) -> set[Kind]:
        """The kinds whose shard has BM25 vectors."""
        await self._ready()
        return set(self._sparse)

    async def add_sparse_vectors(self) -> list[Kind]:
        """Rebuild each shard without BM25 vectors: copy its points into a new shard (dense vectors and payloads
        as stored, BM25 from the payload's text) beside it, then swap the directories; the old one is deleted
        only once the new one holds as many points."""
        shards = await self._ready()
        rebuilt = []
        for kind in Kind:
            if kind in self._sparse:
                continue
            await self._run(self._rebuild, kind, shards[kind])
            rebuilt.append(kind)
        return rebuilt

    def _rebuild(self, kind: Kind, old: qe.EdgeShard) -> None:
        path = self._root / collection_name(self._prefix, kind)
        fresh, backup = path.with_name(path.name + ".rebuild"), path.with_name(path.name + ".dense-only")
        shutil.rmtree(fresh, ignore_errors=True)  # what an interrupted rebuild left
        fresh.mkdir(parents=True)
        new = qe.EdgeShard.create(str(fresh), self._config(sparse=True))
        for field in KEYWORD_INDEXES:
            new.update(qe.UpdateOperation.create_field_index(field, qe.PayloadSchemaType.Keyword))
        offset = None
        while True:
            records, offset = old.scroll(
                qe.ScrollRequest(offset=offset, limit=COPY_BATCH, with_payload=True, with_vector=True)
            )
            points = []
            for r in records:
                content = chunk_from_payload(r.payload or {}).content
                vectors = {"": _dense(r.vector), SPARSE_VECTOR: _sparse(*document_vector(content))}
                points.append(qe.Point(r.id, vectors, r.payload))  # type: ignore[arg-type]
            if points:
                new.update(qe.UpdateOperation.upsert_points(points))
            if offset is None:
                break
        count = qe.CountRequest(exact=True)
        if new.count(count) != old.count(count):
            raise RuntimeError(f"rebuilding {path.name} copied {new.count(count)} of {old.count(count)} points")
        new.flush()
        new.close()
        old.flush()
        old.close()
        del self._shards[kind]
        path.rename(backup)
        fresh.rename(path)
        shard = qe.EdgeShard.load(str(path), self._config(sparse=True))
        self._shards[kind] = shard
        self._sparse.add(kind)
        self._hinted.discard(kind)
        shutil.rmtree(backup)

    async def authors(self) -> list[Author]:
        """Distinct authors: a facet on author_id per shard, then one point per new author for its name."""
        shards = await self._ready()

        def collect() -> dict[str, str]:
            found: dict[str, str] = {}
            for shard in shards.values():
                facet = shard.facet(qe.FacetRequest("author_id", limit=MAX_AUTHORS, exact=True))
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


def _has_sparse(path: Path) -> bool:
    """Whether the shard at `path` was made with BM25 vectors (its persisted config says so)."""
    config = json.loads((path / "edge_config.json").read_text())
    return SPARSE_VECTOR in (config.get("sparse_vectors") or {})


def _sparse(indices: list[int], values: list[float]) -> qe.SparseVector:
    return qe.SparseVector(indices=indices, values=values)


def _dense(vector: object) -> list[float] | None:
    """The dense vector of a hit: the unnamed one when the point has named vectors too."""
    if isinstance(vector, dict):
        return vector.get("")  # type: ignore[no-any-return]
    return vector  # type: ignore[return-value]
