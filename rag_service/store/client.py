"""Store on qdrant-client: a Qdrant server or cluster by URL, or local mode (a path or ":memory:")."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from qdrant_client import AsyncQdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from rag_service.errors import StoreUnavailable
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
# Distribution-based score fusion: it beat RRF on both question sets (docs/evaluation.md, Hybrid search).
_FUSION = models.FusionQuery(fusion=models.Fusion.DBSF)


class _LoopThread:
    """An event loop in its own thread: local mode's "async" calls compute in Python and would block ours."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="qdrant-local", daemon=True)
        self._thread.start()

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    async def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        await asyncio.to_thread(self._thread.join)
        self._loop.close()


class ClientStore:
    """VectorStore on AsyncQdrantClient; `url` for a server, else local mode at `path` or ":memory:".

    On a server, collections are created with `shard_number` shards and `replication_factor` copies of each
    (a cluster spreads them over its nodes); existing collections keep their layout.
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        path: str | None = None,
        collection_prefix: str = "",
        timeout: int = 10,
        shard_number: int = 1,
        replication_factor: int = 1,
    ) -> None:
        if url:
            # No version check: it runs a blocking request on a thread at startup and only warns; the server
            # version to run is pinned in deploy/compose.yaml.
            self._client = AsyncQdrantClient(
                url=url, api_key=api_key or None, timeout=timeout, check_compatibility=False
            )
        elif path in (None, ":memory:"):
            self._client = AsyncQdrantClient(location=":memory:")
        else:
            self._client = AsyncQdrantClient(path=path)
        # Local mode has no payload indexes (it scans) and warns when asked for one.
        self._server = bool(url)
        self._local_loop = None if self._server else _LoopThread()
        self._prefix = collection_prefix
        # Cluster layout of the collections this store creates (a server only; local mode has one shard).
        self._shards = shard_number if url else None
        self._replicas = replication_factor if url else None
        self._ready = False
        self._sparse: set[Kind] = set()  # kinds whose collection has BM25 vectors, as last read
        self._hinted: set[Kind] = set()
        self._ensure_lock = asyncio.Lock()
        self._closed = False

    async def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Runs a client call; a store that is down, failing or missing a collection is StoreUnavailable."""
        try:
            if self._local_loop is None:
                return await coro
            return await self._local_loop.run(coro)
        except ResponseHandlingException as exc:  # no connection, or no answer within the timeout
            raise StoreUnavailable(f"the vector store cannot be reached: {exc}") from exc
        except UnexpectedResponse as exc:
            if exc.status_code == 404:
                raise self._missing(exc) from exc
            raise StoreUnavailable(f"the vector store failed: HTTP {exc.status_code}") from exc
        except ValueError as exc:  # local mode's way of saying 404
            if "not found" not in str(exc):
                raise
            raise self._missing(exc) from exc

    def _missing(self, exc: Exception) -> StoreUnavailable:
        # Ingestion re-creates missing collections; searches until then are refused, not silently empty.
        self._ready = False
        return StoreUnavailable(f"a collection of the vector store is missing ({exc}); ingest to re-create it")

    def _name(self, kind: Kind) -> str:
        return collection_name(self._prefix, kind)

    async def ensure_collections(self) -> None:
        """Create the missing collections (dense and BM25 vectors) and, on a server, their payload indexes; note
        which existing ones have BM25 vectors."""
        for kind in Kind:
            name = self._name(kind)
            if await self._run(self._client.collection_exists(name)):
                info = await self._run(self._client.get_collection(name))
                params = info.config.params.vectors
                if isinstance(params, models.VectorParams) and params.size != VECTOR_SIZE:
                    raise ValueError(f"collection {name} has vectors of size {params.size}, expected {VECTOR_SIZE}")
                if SPARSE_VECTOR in (info.config.params.sparse_vectors or {}):
                    self._sparse.add(kind)
                else:
                    self._sparse.discard(kind)
                continue
            await self._create(name)
            self._sparse.add(kind)
        self._ready = True

    async def _create(self, name: str) -> None:
        vectors = models.VectorParams(size=VECTOR_SIZE, distance=models.Distance.COSINE)
        sparse = {SPARSE_VECTOR: models.SparseVectorParams(modifier=models.Modifier.IDF)}
        create = self._client.create_collection(
            name,
            vectors_config=vectors,
            sparse_vectors_config=sparse,
            shard_number=self._shards,
            replication_factor=self._replicas,
        )
        await self._run(create)
        if self._server:
            for field in KEYWORD_INDEXES:
                await self._run(self._client.create_payload_index(name, field, models.PayloadSchemaType.KEYWORD))

    async def _ensure(self) -> None:
        if self._ready:
            return
        async with self._ensure_lock:  # two first calls must not both create the collections
            if not self._ready:
                await self.ensure_collections()

    async def upsert(self, chunks: Sequence[Chunk], vectors: Sequence[Sequence[float]]) -> int:
        """Write chunks with their vectors; a chunk already stored is overwritten."""
        check_upsert(chunks, vectors)
        await self._ensure()
        by_kind: dict[Kind, list[models.PointStruct]] = {}
        for chunk, vector in zip(chunks, vectors, strict=True):
            dense = list(vector)
            point = models.PointStruct(
                id=point_id(chunk.document_id, chunk.chunk_index),
                vector={"": dense, SPARSE_VECTOR: _sparse(*document_vector(chunk.content))}
                if chunk.kind in self._sparse
                else dense,
                payload=chunk_payload(chunk),
            )
            by_kind.setdefault(chunk.kind, []).append(point)
        for kind, points in by_kind.items():
            await self._run(self._client.upsert(self._name(kind), points=points, wait=True))
        return len(chunks)

    async def delete_document(self, kind: Kind, document_id: str, from_chunk: int = 0) -> None:
        """Delete a document's chunks with chunk_index >= from_chunk."""
        await self._ensure()
        conditions: list[models.Condition] = [
            models.FieldCondition(key="document_id", match=models.MatchValue(value=document_id))
        ]
        if from_chunk > 0:
            conditions.append(models.FieldCondition(key="chunk_index", range=models.Range(gte=from_chunk)))
        selector = models.FilterSelector(filter=models.Filter(must=conditions))
        await self._run(self._client.delete(self._name(kind), points_selector=selector, wait=True))

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
        await self._ensure()
        where = None
        if filter is not None and filter.author_id is not None:
            where = _author_filter(filter.author_id)
        if mode is not RetrievalMode.DENSE and kind not in self._sparse:
            if kind not in self._hinted:
                self._hinted.add(kind)
                log.warning(dense_only_hint(self._name(kind)))
            mode = RetrievalMode.DENSE
        dense = list(vector)
        query: Any = dense
        using, prefetch = None, None
        if mode is RetrievalMode.SPARSE:
            query, using = _sparse(*query_vector(text)), SPARSE_VECTOR
        elif mode is RetrievalMode.HYBRID:
            depth = prefetch_limit(limit)
            query = _FUSION
            prefetch = [
                models.Prefetch(query=dense, limit=depth, filter=where),
                models.Prefetch(query=_sparse(*query_vector(text)), using=SPARSE_VECTOR, limit=depth, filter=where),
            ]
        response = await self._run(
            self._client.query_points(
                self._name(kind),
                query=query,
                using=using,
                prefetch=prefetch,
                limit=limit,
                query_filter=where,
                with_payload=True,
                with_vectors=with_vectors,
            )
        )
        return [
            scored_chunk(hit.payload or {}, hit.score, _dense(hit.vector) if with_vectors else None)
            for hit in response.points
        ]

    async def sparse_kinds(self) -> set[Kind]:
        """The kinds whose collection has BM25 vectors (read again from the store)."""
        await self.ensure_collections()
        return set(self._sparse)

    async def add_sparse_vectors(self) -> list[Kind]:
        """Rebuild each collection without BM25 vectors through a copy: points (dense vectors and payloads as
        stored, BM25 from the payload's text) go to `{name}_rebuild`, the collection is re-created with BM25
        vectors and filled from the copy, then the copy is dropped. Searches of that collection fail in
        between (UNAVAILABLE): run it before starting the service, or in a quiet moment on a server."""
        await self.ensure_collections()
        rebuilt = []
        for kind in Kind:
            if kind in self._sparse:
                continue
            name = self._name(kind)
            copy = f"{name}_rebuild"
            if await self._run(self._client.collection_exists(copy)):  # what an interrupted rebuild left
                await self._run(self._client.delete_collection(copy))
            await self._create(copy)
            await self._copy(name, copy, add_sparse=True)
            await self._run(self._client.delete_collection(name))
            await self._create(name)
            await self._copy(copy, name, add_sparse=False)
            await self._run(self._client.delete_collection(copy))
            self._sparse.add(kind)
            self._hinted.discard(kind)
            rebuilt.append(kind)
        return rebuilt

    async def _copy(self, source: str, target: str, *, add_sparse: bool) -> None:
        offset = None
        while True:
            records, offset = await self._run(
                self._client.scroll(source, limit=COPY_BATCH, offset=offset, with_payload=True, with_vectors=True)
            )
            points = []
            for r in records:
                vectors: Any = r.vector
                if add_sparse:
                    content = chunk_from_payload(r.payload or {}).content
                    vectors = {"": _dense(r.vector), SPARSE_VECTOR: _sparse(*document_vector(content))}
                points.append(models.PointStruct(id=r.id, vector=vectors, payload=r.payload))
            if points:
                await self._run(self._client.upsert(target, points=points, wait=True))
            if offset is None:
                break
        copied = (await self._run(self._client.count(target, exact=True))).count
        total = (await self._run(self._client.count(source, exact=True))).count
        if copied != total:
            raise RuntimeError(f"copying {source} to {target} wrote {copied} of {total} points")

    async def authors(self) -> list[Author]:
        """Distinct authors: an author_id facet per collection, then one point per new author for its name."""
        await self._ensure()
        found: dict[str, str] = {}
        for kind in Kind:
            name = self._name(kind)
            facet = await self._run(self._client.facet(name, "author_id", limit=MAX_AUTHORS, exact=True))
            for hit in facet.hits:
                author_id = str(hit.value)
                if author_id in found:
                    continue
                records, _ = await self._run(
                    self._client.scroll(
                        name,
                        scroll_filter=_author_filter(author_id),
                        limit=1,
                        with_payload=["author_full_name"],
                    )
                )
                if records:
                    found[author_id] = str((records[0].payload or {}).get("author_full_name", ""))
        return sort_authors(found)

    async def count(self, kind: Kind | None = None) -> int:
        """Number of stored chunks of one kind, or of all kinds."""
        await self._ensure()
        total = 0
        for k in [kind] if kind is not None else list(Kind):
            total += (await self._run(self._client.count(self._name(k), exact=True))).count
        return total

    async def check_health(self) -> bool:
        """True when the server (or local store) lists its collections."""
        try:
            await self._run(self._client.get_collections())
        except Exception:
            return False
        return True

    async def aclose(self) -> None:
        """Close the client (and a local store's files and thread); idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._run(self._client.close())
        if self._local_loop is not None:
            await self._local_loop.stop()


def _author_filter(author_id: str) -> models.Filter:
    return models.Filter(must=[models.FieldCondition(key="author_id", match=models.MatchValue(value=author_id))])


def _sparse(indices: list[int], values: list[float]) -> models.SparseVector:
    return models.SparseVector(indices=indices, values=values)


def _dense(vector: Any) -> list[float] | None:
    """The dense vector of a point: the unnamed one when it has named vectors too."""
    if isinstance(vector, dict):
        return vector.get("")  # type: ignore[no-any-return]
    return vector  # type: ignore[no-any-return]
