"""The same behaviour from both vector-store adapters: embedded qdrant-edge and qdrant-client (local mode)."""

from __future__ import annotations

import asyncio
import json
import math
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import qdrant_edge as qe
from qdrant_client import QdrantClient, models

from rag_service.store import VectorStore, open_store, point_id
from rag_service.store.client import ClientStore
from rag_service.store.edge import EdgeStore
from rag_service.types import Author, Chunk, Kind, SearchFilter
from servekit.errors import Unavailable


def unit_vector(seed: int) -> list[float]:
    rng = random.Random(seed)
    v = [rng.gauss(0, 1) for _ in range(384)]
    norm = math.sqrt(sum(x * x for x in v))
    return [x / norm for x in v]


def chunk(doc: str, index: int, author: str = "ada", kind: Kind = Kind.ARTICLE) -> Chunk:
    names = {"ada": "Ada Lovelace", "alan": "Alan Turing"}
    return Chunk(
        document_id=doc,
        kind=kind,
        author_id=author,
        author_full_name=names[author],
        chunk_index=index,
        content=f"{doc} part {index}",
        title=f"Title of {doc}",
        link=f"https://example.org/{doc}",
    )


@pytest.fixture(params=["edge", "client"])
async def store(request: pytest.FixtureRequest, data_dir: Path) -> AsyncIterator[VectorStore]:
    s = open_store(path=str(data_dir / "qdrant"), backend="edge") if request.param == "edge" else ClientStore()
    await s.ensure_collections()
    yield s
    await s.aclose()


async def seed(store: VectorStore) -> None:
    chunks = [chunk("a1", 0), chunk("a1", 1), chunk("t1", 0, author="alan"), chunk("p1", 0, kind=Kind.POST)]
    await store.upsert(chunks, [unit_vector(i) for i in range(len(chunks))])


async def test_collections_are_created_per_kind_with_384_cosine(data_dir: Path) -> None:
    edge = EdgeStore(data_dir / "q", collection_prefix="t_")
    await edge.ensure_collections()
    await edge.aclose()
    for name in ("t_articles", "t_posts", "t_repositories"):
        config = json.loads((data_dir / "q" / name / "edge_config.json").read_text())
        assert config["vectors"][""] == {"size": 384, "distance": "Cosine"}
        shard = qe.EdgeShard.load(str(data_dir / "q" / name))
        assert set(shard.info().payload_schema) == {"author_id", "author_full_name", "document_id"}
        shard.close()
    client = ClientStore(path=str(data_dir / "local"), collection_prefix="t_")
    await client.ensure_collections()
    await client.aclose()
    reader = QdrantClient(path=str(data_dir / "local"))
    for name in ("t_articles", "t_posts", "t_repositories"):
        vectors = reader.get_collection(name).config.params.vectors
        assert isinstance(vectors, models.VectorParams)
        assert (vectors.size, vectors.distance) == (384, models.Distance.COSINE)
    reader.close()


async def test_ensure_collections_is_idempotent(store: VectorStore) -> None:
    await seed(store)
    await store.ensure_collections()
    assert await store.count() == 4


async def test_search_returns_the_nearest_chunk_with_cosine_scores(store: VectorStore) -> None:
    await seed(store)
    hits = await store.search(Kind.ARTICLE, unit_vector(1), limit=3)
    assert hits[0].chunk == chunk("a1", 1)
    assert hits[0].vector_score == pytest.approx(1.0, abs=1e-5)
    assert hits[0].score == hits[0].vector_score
    assert len(hits) == 3 and all(h.vector is None for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


async def test_search_with_an_author_filter_only_returns_that_author(store: VectorStore) -> None:
    await seed(store)
    hits = await store.search(Kind.ARTICLE, unit_vector(1), limit=10, filter=SearchFilter(author_id="alan"))
    assert [h.chunk.document_id for h in hits] == ["t1"]
    unfiltered = await store.search(Kind.ARTICLE, unit_vector(1), limit=10, filter=SearchFilter())
    assert len(unfiltered) == 3


async def test_search_can_return_vectors(store: VectorStore) -> None:
    await seed(store)
    (hit,) = await store.search(Kind.POST, unit_vector(3), limit=1, with_vectors=True)
    assert hit.vector is not None and len(hit.vector) == 384
    assert hit.vector == pytest.approx(unit_vector(3), abs=1e-5)


async def test_upserting_the_same_chunks_again_updates_instead_of_duplicating(store: VectorStore) -> None:
    await seed(store)
    changed = chunk("a1", 0)
    await store.upsert([changed, chunk("a1", 1)], [unit_vector(10), unit_vector(11)])
    assert await store.count(Kind.ARTICLE) == 3
    (hit,) = await store.search(Kind.ARTICLE, unit_vector(10), limit=1)
    assert hit.chunk == changed and hit.vector_score == pytest.approx(1.0, abs=1e-5)


async def test_delete_document_removes_its_chunks_only(store: VectorStore) -> None:
    await seed(store)
    await store.delete_document(Kind.ARTICLE, "a1")
    assert await store.count(Kind.ARTICLE) == 1
    assert await store.count(Kind.POST) == 1


async def test_delete_document_from_a_chunk_index_keeps_the_first_chunks(store: VectorStore) -> None:
    chunks = [chunk("a1", i) for i in range(5)]
    await store.upsert(chunks, [unit_vector(i) for i in range(5)])
    await store.delete_document(Kind.ARTICLE, "a1", from_chunk=2)
    hits = await store.search(Kind.ARTICLE, unit_vector(0), limit=10)
    assert sorted(h.chunk.chunk_index for h in hits) == [0, 1]


async def test_authors_lists_distinct_authors_across_collections(store: VectorStore) -> None:
    assert await store.authors() == []
    await seed(store)
    assert await store.authors() == [Author("ada", "Ada Lovelace"), Author("alan", "Alan Turing")]


async def test_count_per_kind_and_in_total(store: VectorStore) -> None:
    await seed(store)
    assert await store.count(Kind.ARTICLE) == 3
    assert await store.count(Kind.POST) == 1
    assert await store.count(Kind.REPOSITORY) == 0
    assert await store.count() == 4


async def test_health_is_true_while_open(store: VectorStore) -> None:
    assert await store.check_health()


async def test_upsert_rejects_vectors_of_the_wrong_size(store: VectorStore) -> None:
    with pytest.raises(ValueError, match="size 3"):
        await store.upsert([chunk("a1", 0)], [[1.0, 0.0, 0.0]])


@pytest.mark.parametrize("backend", ["edge", "client"])
async def test_a_fresh_store_opens_its_collections_on_first_use(backend: str, data_dir: Path) -> None:
    store = open_store(path=str(data_dir / backend), backend=backend)
    counts = await asyncio.gather(store.count(), store.count(Kind.POST), store.authors())
    assert counts == [0, 0, []]
    await store.aclose()


async def test_edge_store_survives_close_and_reopen(data_dir: Path) -> None:
    first = EdgeStore(data_dir / "q")
    await seed(first)
    await first.aclose()
    assert not await first.check_health()
    second = EdgeStore(data_dir / "q")
    hits = await second.search(Kind.ARTICLE, unit_vector(2), limit=1, filter=SearchFilter(author_id="alan"))
    assert hits[0].chunk == chunk("t1", 0, author="alan")
    assert await second.count() == 4
    assert await second.authors() == [Author("ada", "Ada Lovelace"), Author("alan", "Alan Turing")]
    await second.aclose()


async def test_edge_store_is_held_by_one_store_at_a_time(data_dir: Path) -> None:
    first = EdgeStore(data_dir / "q")
    await first.ensure_collections()
    second = EdgeStore(data_dir / "q")
    with pytest.raises(Unavailable, match="open in another process"):
        await second.ensure_collections()
    await second.aclose()
    await first.aclose()


async def test_client_local_mode_persists_to_a_path(data_dir: Path) -> None:
    first = open_store(path=str(data_dir / "local"), backend="client")
    await seed(first)
    await first.aclose()
    second = open_store(path=str(data_dir / "local"), backend="client")
    assert await second.count() == 4
    await second.aclose()


def test_point_ids_are_deterministic_per_document_and_chunk() -> None:
    assert point_id("doc", 0) == point_id("doc", 0)
    assert len({point_id("doc", 0), point_id("doc", 1), point_id("doc2", 0)}) == 3


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown store backend"):
        open_store(backend="faiss")
