"""`python -m llm_service`: serve the LLM over gRPC until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import os
import signal

from servekit.logs import configure_logging


async def main() -> None:
    """Starts the service, waits for a signal, shuts down gracefully."""
    from llm_service.server import LlmServer
    from llm_service.settings import Settings
    from servekit.grpc_app import start_metrics, wait_for_signal

    settings = Settings()
    start_metrics(settings.metrics_port)
    server = LlmServer(settings)
    await server.start()
    logging.getLogger("llm_service").info("ready", extra={"model": server.backend.info().model_id})
    signame = await wait_for_signal()
    logging.getLogger("llm_service").info("shutting down", extra={"signal": signame})
    await server.stop()


if __name__ == "__main__":
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>` dumps every thread's stack
    configure_logging(os.environ.get("LLM_LOG_LEVEL", "INFO"))
    asyncio.run(main())
