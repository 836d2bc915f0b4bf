"""`python -m rag_service.ingest FILE.jsonl`: ingest a JSON Lines file through the RAG service, or into the store.

The CLI's settings come from the environment (IngestSettings): the store of the direct mode as the RAG service
reads it (RAG_STORE_BACKEND, RAG_QDRANT_PATH, RAG_QDRANT_URL, RAG_QDRANT_API_KEY, RAG_COLLECTION_PREFIX, the
embedding runtime) and how to dial the service (RAG_INGEST_*); the command line's flags win over them.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from rag_service.documents import parse_jsonl_numbered
from rag_service.ingest_client import CONNECT_TIMEOUT_S, ingest_via_service
from rag_service.store import DEFAULT_PATH, VectorStore, open_store
from rag_service.types import Document, IngestReport

if TYPE_CHECKING:
    from servekit.tls import ClientTls

DEFAULT_TARGET = "127.0.0.1:50051"


@dataclass(frozen=True, slots=True)
class StoreOptions:
    """Where the direct mode writes."""

    backend: str = "edge"
    path: str = DEFAULT_PATH
    url: str | None = None
    api_key: str | None = None
    collection_prefix: str = ""
    embedding_runtime: str = "onnx"
    model_cache_dir: str = ""

    def open(self) -> VectorStore:
        """The store these options name (not opened elsewhere: the embedded one is one process's)."""
        return open_store(
            url=self.url,
            api_key=self.api_key,
            path=self.path,
            backend=self.backend,
            collection_prefix=self.collection_prefix,
        )


class IngestSettings(BaseSettings):
    """The CLI's settings: the RAG service's own store variables, and how to dial the service (RAG_INGEST_*).

    The service is dialed with TLS and a bearer token as the gateway dials it (GATEWAY_RAG_*); an empty
    variable counts as unset.
    """

    model_config = SettingsConfigDict(env_prefix="RAG_", extra="ignore", env_ignore_empty=True)

    store_backend: str = Field(default="edge", description="Store of the direct mode: edge or client.")
    qdrant_path: str = Field(default=DEFAULT_PATH, description="Embedded store directory (direct mode).")
    qdrant_url: str = Field(default="", description="Qdrant server URL (direct mode, store_backend=client).")
    qdrant_api_key: SecretStr | None = Field(default=None, description="API key of the Qdrant server.")
    collection_prefix: str = Field(default="", description="Prefix of the collection names, as the service's.")
    embedding_runtime: str = Field(default="onnx", description="Embedding runtime, as the service's (same vectors).")
    model_cache_dir: str = Field(default="", description="Where the ONNX export is cached, as the service's.")
    ingest_tls: bool = Field(default=False, description="Dial the service over TLS (on when a CA file is set).")
    ingest_tls_ca_file: str = Field(default="", description="PEM CA that signed the service's certificate.")
    ingest_tls_cert_file: str = Field(default="", description="PEM client certificate (mutual TLS).")
    ingest_tls_key_file: str = Field(default="", description="PEM private key of ingest_tls_cert_file.")
    ingest_tls_server_name: str = Field(default="", description="Name to verify in the service's certificate.")
    ingest_auth_token: SecretStr | None = Field(default=None, description="Bearer token sent to the service.")

    def store_options(self) -> StoreOptions:
        """Where the direct mode writes."""
        api_key = self.qdrant_api_key.get_secret_value() if self.qdrant_api_key else None
        return StoreOptions(
            self.store_backend,
            self.qdrant_path,
            self.qdrant_url or None,
            api_key or None,
            self.collection_prefix,
            self.embedding_runtime,
            self.model_cache_dir,
        )

    def client_tls(self) -> ClientTls:
        """The channel's TLS configuration (plaintext unless TLS is asked for or a CA / certificate is given)."""
        from servekit.tls import ClientTls

        return ClientTls(
            self.ingest_tls,
            self.ingest_tls_ca_file,
            self.ingest_tls_cert_file,
            self.ingest_tls_key_file,
            self.ingest_tls_server_name,
        )


async def ingest_directly(options: StoreOptions, documents: Sequence[Document]) -> IngestReport:
    """Write the documents into the store with a local embedder (the store must not be open elsewhere)."""
    from rag_service.embedding import Embedder
    from rag_service.ingestor import Ingestor

    store = options.open()
    cache_dir = Path(options.model_cache_dir) if options.model_cache_dir else None
    embedder = await Embedder.open(runtime=options.embedding_runtime, cache_dir=cache_dir)
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
    settings: IngestSettings | None = None,
) -> tuple[IngestReport, str]:
    """Parse JSON Lines and ingest them (service first, else the store); rejections carry line numbers.

    `settings` say how to dial the service (TLS, token) and where the store is; default: the environment's.
    """
    settings = settings or IngestSettings()
    numbered, rejected = parse_jsonl_numbered(lines)
    documents = [doc for _, doc in numbered]
    report = None
    if not direct:
        token = settings.ingest_auth_token
        report = await ingest_via_service(target, documents, connect_timeout, tls=settings.client_tls(), token=token)
        how = f"via the RAG service at {target}"
    if report is None:
        if not direct:
            print(f"no RAG service at {target}; writing to the store directly", file=sys.stderr)
        options = settings.store_options()
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
    from servekit.startup import StartupError, load_settings

    try:
        settings = load_settings(IngestSettings, "RAG_")
    except StartupError as error:
        print(f"ingestion failed: {error}", file=sys.stderr)
        return 1
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
    s = settings
    parser.add_argument("--tls", action="store_true", default=s.ingest_tls, help="dial the service over TLS")
    parser.add_argument("--ca-file", default=s.ingest_tls_ca_file, help="PEM CA of the service (turns TLS on)")
    parser.add_argument("--cert-file", default=s.ingest_tls_cert_file, help="PEM client certificate (mutual TLS)")
    parser.add_argument("--key-file", default=s.ingest_tls_key_file, help="PEM key of --cert-file")
    parser.add_argument("--server-name", default=s.ingest_tls_server_name, help="name to verify in its certificate")
    args = parser.parse_args(argv)
    # The token only from the environment (RAG_INGEST_AUTH_TOKEN): a command line is visible to every user.
    flags = {
        "ingest_tls": args.tls,
        "ingest_tls_ca_file": args.ca_file,
        "ingest_tls_cert_file": args.cert_file,
        "ingest_tls_key_file": args.key_file,
        "ingest_tls_server_name": args.server_name,
    }
    settings = settings.model_copy(update=flags)

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
                settings=settings,
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
