"""`python -m gateway`: serve the gateway with uvicorn on GATEWAY_HOST:GATEWAY_PORT."""

from __future__ import annotations

import logging

import uvicorn

from gateway.app import create_app
from gateway.settings import Settings


def main() -> None:
    """Read the settings from the environment and serve until interrupted."""
    settings = Settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,  # keep the root logger configured above
        log_level=settings.log_level,
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
