"""`python -m rag_service`: serve the RAG service over gRPC until SIGTERM or SIGINT (servekit.service.run_service)."""

from __future__ import annotations

from rag_service.settings import Settings
from servekit.service import GrpcService, run_service


def rag_server(settings: Settings) -> GrpcService[Settings]:
    """The service, imported once logging is configured (the embedder and the store import heavy libraries)."""
    from rag_service.server import RagServer

    return RagServer(settings)


if __name__ == "__main__":
    run_service("rag_service", Settings, rag_server)
