"""An in-process RAG service (with its LLM service) on free loopback ports, for tests."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc

from llmtwin.rag.v1 import rag_service_pb2 as pb
from llmtwin.rag.v1 import rag_service_pb2_grpc
from rag_service.embedding import Embedder
from rag_service.server import RagServer
from rag_service.settings import Settings
from rag_service.tracing import Tracer
from tests.support.llm import serving

CORPUS = Path(__file__).resolve().parents[2] / "data" / "corpus.jsonl"
KINDS = {"article": pb.CONTENT_KIND_ARTICLE, "post": pb.CONTENT_KIND_POST, "repository": pb.CONTENT_KIND_REPOSITORY}


def corpus(ids: Iterable[str] | None = None, limit: int | None = None) -> list[pb.Document]:
    """Sample-corpus documents as protobuf (all, the given ids, or the first `limit`)."""
    rows = [json.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()]
    if ids is not None:
        wanted = set(ids)
        rows = [r for r in rows if r["id"] in wanted]
    rows = rows[:limit] if limit else rows
    return [
        pb.Document(
            id=r["id"],
            kind=KINDS[r["kind"]],
            author_id=r["author_id"],
            author_full_name=r["author_full_name"],
            content=r["content"],
            title=r.get("title", ""),
            link=r.get("link", ""),
        )
        for r in rows
    ]


@dataclass
class RunningRag:
    """A started RAG service with a client stub."""

    server: RagServer
    port: int
    channel: grpc.aio.Channel
    stub: rag_service_pb2_grpc.RagServiceStub

    async def ingest(self, documents: list[pb.Document]) -> pb.IngestDocumentsResponse:
        """Streams documents to IngestDocuments."""
        return await self.stub.IngestDocuments(iter(pb.IngestDocumentsRequest(document=d) for d in documents))


@asynccontextmanager
async def running_rag(
    llm_target: str, embedder: Embedder, tracer: Tracer | None = None, **overrides: object
) -> AsyncIterator[RunningRag]:
    """Starts a RAG service on an in-memory store (port 0, metrics off) and stops it on exit."""
    options: dict[str, object] = {
        "port": 0,
        "metrics_port": 0,
        "llm_target": llm_target,
        "store_backend": "client",
        "qdrant_path": ":memory:",
        "health_interval_s": 0.1,
        "shutdown_drain_s": 0,
        "shutdown_grace_s": 2,
    }
    server = RagServer(Settings(**(options | overrides)), embedder=embedder, tracer=tracer)  # type: ignore[arg-type]
    async with serving(server) as (port, channel):
        yield RunningRag(server, port, channel, rag_service_pb2_grpc.RagServiceStub(channel))
