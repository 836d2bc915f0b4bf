"""`python -m llm_service`: serve the LLM over gRPC until SIGTERM or SIGINT (servekit.service.run_service)."""

from __future__ import annotations

from llm_service.settings import Settings
from servekit.service import GrpcService, run_service


def llm_server(settings: Settings) -> GrpcService[Settings]:
    """The service, imported once logging is configured (the backends import heavy libraries)."""
    from llm_service.server import LlmServer

    return LlmServer(settings)


if __name__ == "__main__":
    run_service("llm_service", Settings, llm_server)
