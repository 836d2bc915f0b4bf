"""Ingestion through a running RAG service: documents streamed to its IngestDocuments RPC."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from rag_service.types import Document, IngestReport

if TYPE_CHECKING:
    from pydantic import SecretStr

    from servekit.tls import ClientTls

CONNECT_TIMEOUT_S = 2.0


async def ingest_via_service(
    target: str,
    documents: Sequence[Document],
    connect_timeout: float = CONNECT_TIMEOUT_S,
    *,
    tls: ClientTls | None = None,
    token: str | SecretStr | None = None,
) -> IngestReport | None:
    """Send the documents to a running RAG service; None when nothing answers at `target` in time.

    The channel is the services' own (servekit.channels.client_channel): TLS as `tls` says, `token` as a
    bearer token on the call.
    """
    from llmtwin.rag.v1 import rag_service_pb2 as pb
    from llmtwin.rag.v1 import rag_service_pb2_grpc as pb_grpc
    from servekit.auth import client_interceptors
    from servekit.channels import client_channel

    def requests() -> Iterator[pb.IngestDocumentsRequest]:
        for doc in documents:
            kind = pb.ContentKind.Value(f"CONTENT_KIND_{doc.kind.name}")
            message = pb.Document(
                id=doc.id,
                kind=kind,
                author_id=doc.author_id,
                author_full_name=doc.author_full_name,
                content=doc.content,
                title=doc.title,
                link=doc.link,
            )
            yield pb.IngestDocumentsRequest(document=message)

    async with client_channel(target, tls=tls, interceptors=client_interceptors(token)) as channel:
        try:
            async with asyncio.timeout(connect_timeout):
                await channel.channel_ready()
        except TimeoutError:
            return None
        response = await pb_grpc.RagServiceStub(channel).IngestDocuments(requests())
    return IngestReport(
        documents_written=response.documents_written,
        chunks_written=response.chunks_written,
        rejected=[(r.index, r.document_id, r.reason) for r in response.rejected],
    )
