"""Dense, BM25 and hybrid search from both store adapters (embedded qdrant-edge, qdrant-client local mode), and
collections made before BM25 vectors: searched dense-only with a hint, then rebuilt without losing a point."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import qdrant_edge as qe
from qdrant_client import QdrantClient, models

from rag_service.store import VectorStore, collection_name, open_store
from rag_service.store.bm25 import document_vector, query_vector
from rag_service.types import Chunk, Kind, RetrievalMode, SearchFilter
from tests.unit.rag_service.test_store import unit_vector

TEXTS = {  # document id: (author, content, seed of its dense vector)
    "n1": ("ada", "We serve embeddings with onnxruntime and quantize_dynamic from its quantization module.", 10),
    "n2": ("ada", "Latency notes on batching requests across many clients.", 11),
    "n3": ("alan", "The onnxruntime quantize_dynamic call also works for these models.", 12),
    "n4": ("ada", "A story about gardens in spring.", 13),
}
NAMES = {"ada": "Ada Lovelace", "alan": "Alan Turing"}
QUERY = "How is quantize_dynamic used with onnxruntime?"


def chunks(kind: Kind = Kind.ARTICLE) -> list[Chunk]:
    return [
        Chunk(doc, kind, author, NAMES[author], 0, content, title=doc) for doc, (author, content, _) in TEXTS.items()
    ]


async def seed(store: VectorStore) -> None:
    await store.upsert(chunks(), [unit_vector(seed) for _, _, seed in TEXTS.values()])


async def search(store: VectorStore, mode: RetrievalMode, author: str | None = None) -> list[str]:
    hits = await store.search(
        Kind.ARTICLE, unit_vector(11), 4, SearchFilter(author_id=author), text=QUERY, mode=mode, with_vectors=True
    )
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert all(h.vector is not None and len(h.vector) == 384 for h in hits)
    return [h.chunk.document_id for h in hits]


def open_backend(backend: str, path: Path) -> VectorStore:
    return open_store(path=str(path), backend=backend)


@pytest.fixture(params=["edge", "client"])
async def store(request: pytest.FixtureRequest, data_dir: Path) -> AsyncIterator[VectorStore]:
    s = open_backend(request.param, data_dir / "qdrant")
    await s.ensure_collections()
    yield s
    await s.aclose()


def test_one_tokenisation_for_documents_and_queries() -> None:
    doc_terms, weights = document_vector("onnxruntime quantize_dynamic onnxruntime")
    query_terms, query_weights = query_vector("ONNXRuntime and quantize_dynamic")
    assert sorted(query_terms) == sorted(doc_terms) and query_weights == [1.0] * len(query_terms)
    assert len(set(weights)) == 2  # the repeated term weighs more (saturated term frequency)
    assert document_vector("onnxruntime") == document_vector("onnxruntime")


async def test_dense_search_ranks_by_the_embedding(store: VectorStore) -> None:
    await seed(store)
    assert (await search(store, RetrievalMode.DENSE))[0] == "n2"


async def test_sparse_search_finds_the_exact_identifiers_only(store: VectorStore) -> None:
    await seed(store)
    assert sorted(await search(store, RetrievalMode.SPARSE)) == ["n1", "n3"]
    assert await search(store, RetrievalMode.SPARSE, author="ada") == ["n1"]


async def test_hybrid_search_fuses_both_under_the_author_filter(store: VectorStore) -> None:
    await seed(store)
    found = await search(store, RetrievalMode.HYBRID)
    assert set(found[:3]) == {"n1", "n2", "n3"}  # the dense best and both BM25 matches lead
    assert set(found) == set(TEXTS)
    filtered = await search(store, RetrievalMode.HYBRID, author="ada")
    assert set(filtered[:2]) == {"n1", "n2"} and "n3" not in filtered  # the filter holds in both prefetches


async def test_new_collections_have_bm25_vectors(store: VectorStore) -> None:
    assert await store.sparse_kinds() == set(Kind)
    assert await store.add_sparse_vectors() == []


def make_dense_only_collections(backend: str, path: Path) -> None:
    """Collections as the store made them before BM25 vectors: one unnamed 384-d cosine vector."""
    for kind in Kind:
        name = collection_name("", kind)
        if backend == "edge":
            (path / name).mkdir(parents=True)
            config = qe.EdgeConfig(vectors=qe.EdgeVectorParams(size=384, distance=qe.Distance.Cosine))
            qe.EdgeShard.create(str(path / name), config).close()
        else:
            client = QdrantClient(path=str(path))
            client.create_collection(
                name, vectors_config=models.VectorParams(size=384, distance=models.Distance.COSINE)
            )
            client.close()


@pytest.mark.parametrize("backend", ["edge", "client"])
async def test_a_dense_only_store_is_searched_dense_only_then_rebuilt_without_loss(
    backend: str, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = data_dir / "old"
    make_dense_only_collections(backend, path)
    store = open_backend(backend, path)
    await seed(store)  # written dense-only
    await store.upsert(chunks(Kind.POST)[:1], [unit_vector(20)])
    assert await store.sparse_kinds() == set()
    dense = await search(store, RetrievalMode.DENSE)
    with caplog.at_level(logging.WARNING, logger="rag_service.store"):
        assert await search(store, RetrievalMode.HYBRID) == dense
        assert await search(store, RetrievalMode.SPARSE) == dense
    hints = [r.getMessage() for r in caplog.records if "no BM25 vectors" in r.getMessage()]
    assert len(hints) == 1 and "python -m rag_service.migrate" in hints[0]  # once per collection
    before = await store.search(Kind.ARTICLE, unit_vector(10), 4, with_vectors=True)

    assert sorted(await store.add_sparse_vectors()) == sorted(Kind)
    assert await store.sparse_kinds() == set(Kind)
    assert (await store.count(Kind.ARTICLE), await store.count(Kind.POST)) == (4, 1)
    after = await store.search(Kind.ARTICLE, unit_vector(10), 4, with_vectors=True)
    assert [h.chunk for h in after] == [h.chunk for h in before]
    assert [h.vector_score for h in after] == pytest.approx([h.vector_score for h in before])
    for new, old in zip(after, before, strict=True):
        assert new.vector == pytest.approx(old.vector)
    assert sorted(await search(store, RetrievalMode.SPARSE)) == ["n1", "n3"]
    await store.aclose()

    reopened = open_backend(backend, path)  # the rebuilt collections are what the store now opens
    assert await reopened.sparse_kinds() == set(Kind)
    assert await search(reopened, RetrievalMode.SPARSE, author="ada") == ["n1"]
    await reopened.upsert(chunks()[:1], [unit_vector(10)])  # new writes carry BM25 vectors
    assert await reopened.count() == 5
    await reopened.aclose()
    if backend == "edge":
        left = [p.name for p in path.iterdir()]
    else:
        reader = QdrantClient(path=str(path))
        left = [c.name for c in reader.get_collections().collections]
        reader.close()
    assert sorted(left) == sorted(collection_name("", k) for k in Kind)  # no copy or backup left behind


def test_the_migration_command_rebuilds_a_dense_only_store(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rag_service.ingest import StoreOptions
    from rag_service.migrate import migrate

    path = data_dir / "old"
    make_dense_only_collections("edge", path)
    rebuilt, chunks = asyncio.run(migrate(StoreOptions(backend="edge", path=str(path))))
    assert (sorted(rebuilt), chunks) == (sorted(Kind), 0)
    again, _ = asyncio.run(migrate(StoreOptions(backend="edge", path=str(path))))
    assert again == []
