"""`python -m llm_service`: serve the LLM over gRPC until SIGTERM or SIGINT."""

from __future__ import annotations

import faulthandler
import logging
import os
import signal

from servekit.logs import configure_logging
from servekit.startup import run_service

NAME = "llm_service"
PREFIX = "LLM_"


async def main() -> None:
    """Starts the service, waits for a signal, shuts down gracefully.

    What a user can get wrong at start-up (a setting's value, a port in use, a TLS file) ends the process with
    one line on stderr naming the setting (servekit.startup).
    """
    from llm_service.server import LlmServer
    from llm_service.settings import Settings
    from servekit.grpc_app import start_metrics, wait_for_signal
    from servekit.startup import ListenError, check_server_tls, load_settings

    settings = load_settings(Settings, PREFIX)
    check_server_tls(settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file, PREFIX)
    try:
        start_metrics(settings.metrics_port)
    except ListenError as error:
        raise error.startup(f"{PREFIX}METRICS_PORT") from None
    server = LlmServer(settings)
    try:
        await server.start()
    except ListenError as error:
        await server.stop()  # release what start() opened before it failed
        raise error.startup(f"{PREFIX}PORT", f"{PREFIX}HOST") from None
    logging.getLogger(NAME).info("ready", extra={"model": server.backend.info().model_id})
    signame = await wait_for_signal()
    logging.getLogger(NAME).info("shutting down", extra={"signal": signame})
    await server.stop()


if __name__ == "__main__":
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>` dumps every thread's stack
    configure_logging(os.environ.get("LLM_LOG_LEVEL", "INFO"))
    run_service(NAME, main)
