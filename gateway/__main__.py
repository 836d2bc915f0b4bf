"""`python -m gateway`: serve the gateway with uvicorn on GATEWAY_HOST:GATEWAY_PORT."""

from __future__ import annotations

import signal

import uvicorn

from gateway.app import create_app
from gateway.settings import Settings
from servekit.logs import configure_logging
from servekit.tls import ServerTls


def main() -> None:
    """Read the settings from the environment and serve until SIGTERM or SIGINT, then exit 0."""
    settings = Settings()
    configure_logging(settings.log_level)
    # uvicorn handles the signal (graceful shutdown), restores the previous handler and raises the signal
    # again; with these no-op handlers in place, a clean shutdown ends the process with status 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,  # keep the JSON logging configured above
        log_level=settings.log_level,
        timeout_graceful_shutdown=5,
        **ServerTls(settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file).uvicorn_options(),
    )


if __name__ == "__main__":
    main()
