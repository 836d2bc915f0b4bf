"""Ingestion: chunk, embed and write documents; and the `python -m rag_service.ingest FILE.jsonl` CLI."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rag_service.chunking import DEFAULT_CHUNK_SIZES, ChunkSize, chunk_document
from rag_service.documents import parse_jsonl_numbered, validate_document
from rag_service.store import DEFAULT_PATH, VectorStore, open_store
from rag_service.types import Chunk, Document, IngestReport, Kind

if TYPE_CHECKING:
    from pydantic import SecretStr

    from rag_service.embedding import Embedder
    from servekit.tls import ClientTls

DEFAULT_TARGET = "127.0.0.1:50051"
CONNECT_TIMEOUT_S = 2.0


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


# ---- CLI -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoreOptions:
    """Where the direct mode writes; read from the RAG_* environment variables."""

    backend: str = "edge"
    path: str = DEFAULT_PATH
    url: str | None = None
    api_key: str | None = None


def store_options_from_env(env: Mapping[str, str] | None = None) -> StoreOptions:
    """Store options from RAG_STORE_BACKEND, RAG_QDRANT_PATH, RAG_QDRANT_URL and RAG_QDRANT_API_KEY."""
    env = os.environ if env is None else env
    return StoreOptions(
        backend=env.get("RAG_STORE_BACKEND") or "edge",
        path=env.get("RAG_QDRANT_PATH") or DEFAULT_PATH,
        url=env.get("RAG_QDRANT_URL") or None,
        api_key=env.get("RAG_QDRANT_API_KEY") or None,
    )


@dataclass(frozen=True, slots=True)
class ServiceOptions:
    """How the CLI dials the RAG service: TLS and bearer token as the gateway dials it (GATEWAY_RAG_*).

    From RAG_INGEST_TLS, RAG_INGEST_TLS_CA_FILE, RAG_INGEST_TLS_CERT_FILE, RAG_INGEST_TLS_KEY_FILE,
    RAG_INGEST_TLS_SERVER_NAME and RAG_INGEST_AUTH_TOKEN; the command line's flags win.
    """

    tls: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    server_name: str = ""
    token: str = ""

    def client_tls(self) -> ClientTls:
        """The channel's TLS configuration (plaintext unless TLS is asked for or a CA / certificate is given)."""
        from servekit.tls import ClientTls

        return ClientTls(self.tls, self.ca_file, self.cert_file, self.key_file, self.server_name)


def service_options_from_env(env: Mapping[str, str] | None = None) -> ServiceOptions:
    """Service options from the RAG_INGEST_* environment variables."""
    env = os.environ if env is None else env
    return ServiceOptions(
        tls=(env.get("RAG_INGEST_TLS") or "").strip().lower() in {"1", "true", "yes", "on"},
        ca_file=env.get("RAG_INGEST_TLS_CA_FILE") or "",
        cert_file=env.get("RAG_INGEST_TLS_CERT_FILE") or "",
        key_file=env.get("RAG_INGEST_TLS_KEY_FILE") or "",
        server_name=env.get("RAG_INGEST_TLS_SERVER_NAME") or "",
        token=env.get("RAG_INGEST_AUTH_TOKEN") or "",
    )


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


async def ingest_directly(options: StoreOptions, documents: Sequence[Document]) -> IngestReport:
    """Write the documents into the store with a local embedder (the store must not be open elsewhere)."""
    from rag_service.embedding import Embedder

    store = open_store(url=options.url, api_key=options.api_key, path=options.path, backend=options.backend)
    embedder = await Embedder.open()
    try:
        await store.ensure_collections()
        return await Ingestor(store, embedder).ingest(documents)
    finally:
        await embedder.aclose()
        await store.aclose()


async def ingest_lines(
    lines: Iterable[str | bytes],
    *,
    target: str = DEFAULT_TARGET,
    direct: bool = False,
    connect_timeout: float = CONNECT_TIMEOUT_S,
    env: Mapping[str, str] | None = None,
    service: ServiceOptions | None = None,
) -> tuple[IngestReport, str]:
    """Parse JSON Lines and ingest them (service first, else the store); rejections carry line numbers.

    `service` says how to dial the service (TLS, token); default: from the RAG_INGEST_* variables of `env`.
    """
    numbered, rejected = parse_jsonl_numbered(lines)
    documents = [doc for _, doc in numbered]
    report = None
    if not direct:
        service = service or service_options_from_env(env)
        tls = service.client_tls()
        report = await ingest_via_service(target, documents, connect_timeout, tls=tls, token=service.token)
        how = f"via the RAG service at {target}"
    if report is None:
        if not direct:
            print(f"no RAG service at {target}; writing to the store directly", file=sys.stderr)
        options = store_options_from_env(env)
        report = await ingest_directly(options, documents)
        where = options.url if options.backend == "client" and options.url else options.path
        how = f"directly into the {options.backend} store at {where}"
    # Positions in the stream sent map back to the file's line numbers.
    line_of = [number for number, _ in numbered]
    rejected += [(line_of[i] if 0 <= i < len(line_of) else i, d, r) for i, d, r in report.rejected]
    report.rejected = sorted(rejected)
    return report, how


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; exit status 0 when all written, 2 when some lines were rejected, 1 on failure."""
    parser = argparse.ArgumentParser(
        prog="python -m rag_service.ingest",
        description="Ingest a JSON Lines file of documents (id, kind, author_id, author_full_name, content, "
        "title, link). Goes through the running RAG service, or writes to the store when none answers.",
    )
    parser.add_argument("file", help="JSON Lines file, or - for stdin")
    parser.add_argument("--target", default=DEFAULT_TARGET, help=f"RAG service address (default {DEFAULT_TARGET})")
    parser.add_argument("--direct", action="store_true", help="skip the service and write to the store directly")
    parser.add_argument(
        "--connect-timeout", type=float, default=CONNECT_TIMEOUT_S, help="seconds to wait for the service"
    )
    from_env = service_options_from_env()
    parser.add_argument("--tls", action="store_true", default=from_env.tls, help="dial the service over TLS")
    parser.add_argument("--ca-file", default=from_env.ca_file, help="PEM CA of the service (turns TLS on)")
    parser.add_argument("--cert-file", default=from_env.cert_file, help="PEM client certificate (mutual TLS)")
    parser.add_argument("--key-file", default=from_env.key_file, help="PEM key of --cert-file")
    parser.add_argument("--server-name", default=from_env.server_name, help="name to verify in its certificate")
    args = parser.parse_args(argv)
    # The token only from the environment (RAG_INGEST_AUTH_TOKEN): a command line is visible to every user.
    service = ServiceOptions(args.tls, args.ca_file, args.cert_file, args.key_file, args.server_name, from_env.token)

    # Bytes: a line that is not UTF-8 is rejected by number like any other bad line, not a crash.
    if args.file == "-":
        lines = sys.stdin.buffer.readlines()
    else:
        with open(args.file, "rb") as f:
            lines = f.readlines()
    try:
        report, how = asyncio.run(
            ingest_lines(
                lines,
                target=args.target,
                direct=args.direct,
                connect_timeout=args.connect_timeout,
                service=service,
            )
        )
    except Exception as error:  # one clean line for the user: an RPC error, a locked store, ...
        print(f"ingestion failed: {_describe(error)}", file=sys.stderr)
        return 1
    print(f"{report.documents_written} documents, {report.chunks_written} chunks written {how}")
    for number, doc_id, reason in report.rejected:
        print(f"line {number}{f' ({doc_id})' if doc_id else ''}: {reason}", file=sys.stderr)
    return 2 if report.rejected else 0


def _describe(error: Exception) -> str:
    import grpc

    if isinstance(error, grpc.aio.AioRpcError):
        return f"{error.code().name}: {error.details()}"
    return str(error) or type(error).__name__


if __name__ == "__main__":
    raise SystemExit(main())
