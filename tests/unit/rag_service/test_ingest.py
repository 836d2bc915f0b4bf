"""Ingestion: chunk + embed + upsert with the real model and store, and the CLI in both of its modes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path

import grpc
import pytest

from llmtwin.rag.v1 import rag_service_pb2 as pb
from llmtwin.rag.v1 import rag_service_pb2_grpc as pb_grpc
from rag_service.embedding import Embedder
from rag_service.ingest import IngestSettings, ingest_lines, main
from rag_service.ingestor import Ingestor
from rag_service.store.edge import EdgeStore
from rag_service.types import Document, Kind, SearchFilter

PARAGRAPH = (
    "Retrieval augmented generation grounds a language model in documents it has never seen. "
    "The documents are split into chunks, embedded, and stored in a vector database. "
    "At query time the closest chunks are retrieved and packed into the prompt. "
)


def document(doc_id: str = "a-1", kind: Kind = Kind.ARTICLE, paragraphs: int = 6, **changes: str) -> Document:
    fields = {
        "id": doc_id,
        "kind": kind,
        "author_id": "ada",
        "author_full_name": "Ada Lovelace",
        "content": "\n\n".join([PARAGRAPH] * paragraphs),
        "title": "On retrieval",
        "link": "https://example.org/rag",
    }
    return Document(**{**fields, **changes})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def embedder() -> Iterator[Embedder]:
    e = Embedder(threads=1)
    yield e
    e.close()


@pytest.fixture
async def store(data_dir: Path) -> AsyncIterator[EdgeStore]:
    s = EdgeStore(data_dir / "qdrant")
    await s.ensure_collections()
    yield s
    await s.aclose()


async def test_documents_are_chunked_embedded_and_written(store: EdgeStore, embedder: Embedder) -> None:
    report = await Ingestor(store, embedder).ingest([document("a-1"), document("p-1", Kind.POST, paragraphs=1)])
    assert report.documents_written == 2
    assert report.chunks_written == await store.count() > 2
    assert await store.count(Kind.POST) == 1
    (query,) = await embedder.embed(["how are documents retrieved into the prompt?"])
    hits = await store.search(Kind.ARTICLE, query, limit=1, filter=SearchFilter(author_id="ada"))
    assert hits[0].chunk.document_id == "a-1" and hits[0].score > 0.3


async def test_reingesting_is_idempotent(store: EdgeStore, embedder: Embedder) -> None:
    ingestor = Ingestor(store, embedder)
    first = await ingestor.ingest([document()])
    second = await ingestor.ingest([document()])
    assert first == second
    assert await store.count() == first.chunks_written


async def test_a_shorter_new_version_leaves_no_stale_chunks(store: EdgeStore, embedder: Embedder) -> None:
    ingestor = Ingestor(store, embedder)
    await ingestor.ingest([document(paragraphs=8)])
    report = await ingestor.ingest([document(paragraphs=1, content="A much shorter version.")])
    assert report.chunks_written == 1
    assert await store.count() == 1


async def test_a_document_that_changes_kind_moves_collections(store: EdgeStore, embedder: Embedder) -> None:
    ingestor = Ingestor(store, embedder)
    await ingestor.ingest([document("x-1", Kind.ARTICLE)])
    await ingestor.ingest([document("x-1", Kind.POST, paragraphs=1)])
    assert (await store.count(Kind.ARTICLE), await store.count(Kind.POST)) == (0, 1)


async def test_the_last_copy_of_a_repeated_id_wins(store: EdgeStore, embedder: Embedder) -> None:
    report = await Ingestor(store, embedder, batch_chunks=1000).ingest(
        [document("d-1", paragraphs=8), document("d-1", Kind.POST, paragraphs=1)]
    )
    assert report.documents_written == 2
    assert (await store.count(Kind.ARTICLE), await store.count(Kind.POST)) == (0, 1)


async def test_async_iterables_are_ingested_in_batches(store: EdgeStore, embedder: Embedder) -> None:
    async def stream() -> AsyncIterator[Document]:
        for i in range(5):
            yield document(f"s-{i}", paragraphs=2)

    before = embedder.stats.batches
    report = await Ingestor(store, embedder, batch_chunks=6).ingest(stream())
    assert report.documents_written == 5
    assert await store.count() == report.chunks_written
    # Chunks of several documents share an embedding call.
    assert embedder.stats.batches - before < 5


async def test_invalid_documents_are_reported_by_position(store: EdgeStore, embedder: Embedder) -> None:
    report = await Ingestor(store, embedder).ingest([document("ok"), document("blank", content="  ")])
    assert report.documents_written == 1
    assert report.rejected == [(1, "blank", "content: required, a non-empty string")]


def jsonl(*records: Mapping[str, object] | str) -> list[str]:
    return [r if isinstance(r, str) else json.dumps(r) for r in records]


GOOD = {"id": "g-1", "kind": "post", "author_id": "ada", "author_full_name": "Ada Lovelace", "content": PARAGRAPH}
LINES = jsonl(GOOD, "{broken", {**GOOD, "id": "g-2", "kind": "tweet"}, "", {**GOOD, "id": "g-3", "author_id": "bob"})


async def test_direct_mode_writes_valid_lines_and_reports_bad_ones(data_dir: Path, embedder: Embedder) -> None:
    settings = IngestSettings(qdrant_path=str(data_dir / "q"))
    report, how = await ingest_lines(LINES, direct=True, settings=settings)
    assert (report.documents_written, report.chunks_written) == (2, 2)
    assert [(n, i) for n, i, _ in report.rejected] == [(2, ""), (3, "g-2")]
    assert how == f"directly into the edge store at {data_dir / 'q'}"
    store = EdgeStore(data_dir / "q")
    assert await store.count(Kind.POST) == 2
    await store.aclose()


class RecordingRagService(pb_grpc.RagServiceServicer):
    """A RagService whose IngestDocuments writes with a real Ingestor and refuses author "bob"."""

    def __init__(self, ingestor: Ingestor) -> None:
        self.ingestor = ingestor

    async def IngestDocuments(
        self, request_iterator: AsyncIterator[pb.IngestDocumentsRequest], context: grpc.aio.ServicerContext
    ) -> pb.IngestDocumentsResponse:
        accepted, refused = [], []
        async for i, request in _enumerate(request_iterator):
            d = request.document
            if d.author_id == "bob":
                refused.append(pb.RejectedDocument(index=i, document_id=d.id, reason="unknown author"))
                continue
            kind = Kind[pb.ContentKind.Name(d.kind).removeprefix("CONTENT_KIND_")]
            accepted.append(Document(d.id, kind, d.author_id, d.author_full_name, d.content, d.title, d.link))
        report = await self.ingestor.ingest(accepted)
        return pb.IngestDocumentsResponse(
            documents_written=report.documents_written, chunks_written=report.chunks_written, rejected=refused
        )


async def _enumerate(
    items: AsyncIterator[pb.IngestDocumentsRequest],
) -> AsyncIterator[tuple[int, pb.IngestDocumentsRequest]]:
    i = 0
    async for item in items:
        yield i, item
        i += 1


async def test_the_cli_goes_through_a_running_service(store: EdgeStore, embedder: Embedder) -> None:
    server = grpc.aio.server()
    pb_grpc.add_RagServiceServicer_to_server(RecordingRagService(Ingestor(store, embedder)), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        report, how = await ingest_lines(LINES, target=f"127.0.0.1:{port}")
    finally:
        await server.stop(None)
    assert how == f"via the RAG service at 127.0.0.1:{port}"
    assert (report.documents_written, report.chunks_written) == (1, 1)
    # The service's rejection (stream position 1) is reported with the file's line number.
    assert report.rejected == [
        (2, "", "invalid JSON: Expecting property name enclosed in double quotes at column 2"),
        (3, "g-2", "kind: must be one of article, post, repository, got 'tweet'"),
        (5, "g-3", "unknown author"),
    ]
    assert await store.count() == 1


def test_the_cli_falls_back_to_the_store_when_no_service_answers(
    data_dir: Path, embedder: Embedder, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    source = data_dir / "docs.jsonl"
    source.write_text("\n".join(LINES) + "\n")
    monkeypatch.setenv("RAG_QDRANT_PATH", str(data_dir / "q"))
    # Port 9 (discard) has no gRPC server on loopback.
    status = main([str(source), "--target", "127.0.0.1:9", "--connect-timeout", "0.3"])
    out, err = capsys.readouterr()
    assert status == 2
    assert out.startswith("2 documents, 2 chunks written directly into the edge store at")
    assert "no RAG service at 127.0.0.1:9" in err
    assert "line 2: invalid JSON" in err and "line 3 (g-2): kind: must be one of" in err


def test_store_options_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RAG_STORE_BACKEND", "RAG_QDRANT_PATH", "RAG_QDRANT_URL", "RAG_QDRANT_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    assert IngestSettings().store_options().backend == "edge"
    environment = {"RAG_STORE_BACKEND": "client", "RAG_QDRANT_URL": "http://q:6333", "RAG_QDRANT_API_KEY": "k"}
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    options = IngestSettings().store_options()
    assert (options.backend, options.path, options.url, options.api_key) == (
        "client",
        "var/qdrant",
        "http://q:6333",
        "k",
    )
