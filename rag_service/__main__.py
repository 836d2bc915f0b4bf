"""`python -m rag_service`: serve the RAG service over gRPC until SIGTERM or SIGINT."""

from __future__ import annotations

import faulthandler
import logging
import os
import signal

from servekit.logs import configure_logging
from servekit.startup import run_service

NAME = "rag_service"
PREFIX = "RAG_"


async def main() -> None:
    """Starts the service, waits for a signal, shuts down gracefully.

    What a user can get wrong at start-up (a setting's value, a port in use, a TLS file, a store directory
    another process holds) ends the process with one line on stderr naming the setting (servekit.startup).
    """
    from rag_service.server import RagServer
    from rag_service.settings import Settings
    from servekit.errors import Unavailable
    from servekit.grpc_app import start_metrics, wait_for_signal
    from servekit.startup import ListenError, StartupError, check_server_tls, client_tls, load_settings

    settings = load_settings(Settings, PREFIX)
    check_server_tls(settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file, PREFIX)
    s = settings
    client_tls(
        s.llm_tls, s.llm_tls_ca_file, s.llm_tls_cert_file, s.llm_tls_key_file, s.llm_tls_server_name, "RAG_LLM_TLS_"
    )
    try:
        start_metrics(settings.metrics_port)
    except ListenError as error:
        raise error.startup(f"{PREFIX}METRICS_PORT") from None
    server = RagServer(settings)
    try:
        await server.start()
    except ListenError as error:
        await server.stop()  # release what start() opened before it failed
        raise error.startup(f"{PREFIX}PORT", f"{PREFIX}HOST") from None
    except Unavailable as error:
        # The embedded store is held by another process (its WAL lock); a store server that is down is not an
        # error at start-up (the service starts NOT_SERVING and waits for it).
        if settings.store_backend != "edge":
            raise
        await server.stop()
        raise StartupError(f"cannot open the store at {settings.qdrant_path} ({PREFIX}QDRANT_PATH): {error}") from None
    logging.getLogger(NAME).info("ready")
    signame = await wait_for_signal()
    logging.getLogger(NAME).info("shutting down", extra={"signal": signame})
    await server.stop()


if __name__ == "__main__":
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>` dumps every thread's stack
    configure_logging(os.environ.get("RAG_LOG_LEVEL", "INFO"))
    run_service(NAME, main)
