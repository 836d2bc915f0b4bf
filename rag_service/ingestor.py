"""The Ingestor: chunk, embed and write documents (the service's IngestDocuments, the CLI's direct mode)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from typing import TYPE_CHECKING

from rag_service.chunking import DEFAULT_CHUNK_SIZES, ChunkSize, chunk_document
from rag_service.documents import validate_document
from rag_service.store import VectorStore
from rag_service.types import Chunk, Document, IngestReport, Kind

if TYPE_CHECKING:
    from rag_service.embedding import Embedder


class Ingestor:
    """Writes documents to the store; re-ingesting a document id replaces its chunks, in any kind."""

    def __init__(
        self,
        store: VectorStore,
        embedder: Embedder,
        chunk_sizes: Mapping[Kind, ChunkSize] = DEFAULT_CHUNK_SIZES,
        batch_chunks: int = 64,
    ) -> None:
        self._store = store
        self._embedder = embedder
        self._sizes = chunk_sizes
        self._batch_chunks = batch_chunks

    async def ingest(self, documents: Iterable[Document] | AsyncIterable[Document]) -> IngestReport:
        """Chunk, embed (in batches across documents) and upsert; invalid documents are reported by position."""
        report = IngestReport()
        pending: list[tuple[Document, list[Chunk]]] = []
        index = -1
        async for doc in _aiter(documents):
            index += 1
            problems = validate_document(doc)
            if problems:
                report.rejected.append((index, doc.id, "; ".join(problems)))
                continue
            if any(d.id == doc.id for d, _ in pending):
                await self._write(pending, report)  # the later copy of a document must win
            # Tokenizing a long document takes a while: keep it off the event loop.
            chunks = await asyncio.to_thread(chunk_document, doc, self._embedder.tokenizer, self._sizes)
            pending.append((doc, chunks))
            if sum(len(c) for _, c in pending) >= self._batch_chunks:
                await self._write(pending, report)
        await self._write(pending, report)
        return report

    async def _write(self, pending: list[tuple[Document, list[Chunk]]], report: IngestReport) -> None:
        chunks = [c for _, doc_chunks in pending for c in doc_chunks]
        if chunks:
            vectors = await self._embedder.embed([c.content for c in chunks])
            await self._store.upsert(chunks, vectors)
        # Upsert first, then drop what the new version no longer has: searches never see the document vanish.
        for doc, doc_chunks in pending:
            for kind in Kind:
                await self._store.delete_document(kind, doc.id, from_chunk=len(doc_chunks) if kind is doc.kind else 0)
        report.documents_written += len(pending)
        report.chunks_written += len(chunks)
        pending.clear()


async def _aiter(items: Iterable[Document] | AsyncIterable[Document]) -> AsyncIterator[Document]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item
