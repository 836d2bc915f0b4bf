"""`python -m gateway`: serve the gateway with uvicorn on GATEWAY_HOST:GATEWAY_PORT."""

from __future__ import annotations

import signal
import socket
import sys

import uvicorn

from gateway.app import create_app
from gateway.settings import Settings
from servekit.logs import configure_logging
from servekit.startup import ListenError, StartupError, bind_socket, checked_settings, report

NAME = "gateway"
STARTUP_FAILURE = 3  # uvicorn's own status when the app's lifespan fails to start


def prepare() -> tuple[Settings, socket.socket]:
    """The settings, TLS files checked and the listening address bound; StartupError names what to change."""
    settings = checked_settings(Settings)
    try:
        # Bound here rather than by uvicorn, whose bind error is a log line and exit status 1 with no setting.
        sock = bind_socket(settings.host, settings.port)
    except ListenError as error:
        raise error.startup("GATEWAY_PORT", "GATEWAY_HOST") from None
    return settings, sock


def main() -> None:
    """Read the settings from the environment and serve until SIGTERM or SIGINT, then exit 0.

    A start-up failure a user can cause (a port in use, a bad TLS file or setting) is one line on stderr
    naming the setting, and exit status 1.
    """
    try:
        settings, sock = prepare()
    except StartupError as error:
        report(NAME, error)
    configure_logging(settings.log_level)
    # uvicorn handles the signal (graceful shutdown), restores the previous handler and raises the signal
    # again; with these no-op handlers in place, a clean shutdown ends the process with status 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,  # keep the JSON logging configured above
        log_level=settings.log_level,
        timeout_graceful_shutdown=5,
        **settings.server_tls().uvicorn_options(),
    )
    server = uvicorn.Server(config)
    with sock:
        server.run(sockets=[sock])
    if not server.started:
        sys.exit(STARTUP_FAILURE)


if __name__ == "__main__":
    main()
