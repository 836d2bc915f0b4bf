"""A gRPC service's life: start, health, graceful stop, and `python -m <service>` around it.

GrpcService     start(): open() → listen (NOT_SERVING) → load() → health watcher (SERVING once
                check_health() says so); stop(): NOT_SERVING, drain, refuse new calls, let in-flight ones
                finish within the grace period → close()
run_service     a service's whole __main__: settings read and checked, metrics, start, serve until
                SIGTERM or SIGINT, stop; what a user can get wrong is one line on stderr naming the setting
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import logging
import os
import signal
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from servekit.admission import Admission
from servekit.grpc_app import secured_app, start_metrics, wait_for_signal, watch_health
from servekit.logs import configure_logging
from servekit.settings import GrpcServerSettings
from servekit.startup import ListenError, StartupError, checked_settings, report

S = TypeVar("S", bound=GrpcServerSettings)


class GrpcService(Generic[S]):
    """The start/stop scaffold a service's server extends; it overrides the hooks, never start() or stop()."""

    def __init__(self, settings: S, service_name: str, domain: str):
        self.settings = settings
        self.app, self.tls = secured_app(service_name, domain, settings)
        self.admission = Admission(settings.max_concurrent, settings.max_queued, settings.queue_timeout_s)
        self.log = logging.getLogger(type(self).__module__)
        self._health_task: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Opens what the servicer needs, listens (health NOT_SERVING), loads the rest, watches health;
        returns the bound port. ListenError when the address cannot be bound."""
        s = self.settings
        await self.open()
        port = await self.app.start(s.host, s.port, await asyncio.to_thread(self.tls.grpc_credentials))
        security = {"tls": "mutual" if self.tls.mutual else self.tls.enabled, "auth": bool(s.auth_tokens)}
        self.log.info("listening", extra={"address": f"{s.host}:{port}", **self.describe(), **security})
        await self.load()
        self._health_task = asyncio.create_task(watch_health(self.app, self.check_health, s.health_interval_s))
        return port

    async def stop(self) -> None:
        """NOT_SERVING, stop accepting, let in-flight calls finish within the grace period, then close()."""
        if self._health_task:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
        await self.app.stop(self.settings.shutdown_grace_s, self.settings.shutdown_drain_s)
        await self.close()

    async def open(self) -> None:
        """Before listening: builds what the servicer needs and adds it (gRPC takes no servicer once started)."""

    async def load(self) -> None:
        """After listening, health NOT_SERVING: what takes long (a model), so probes see the process meanwhile."""

    async def check_health(self) -> bool:
        """Whether the service can serve; polled every health_interval_s once started."""
        raise NotImplementedError

    async def close(self) -> None:
        """After the calls drained: releases what open() and load() acquired (also after a failed start)."""

    def describe(self) -> dict[str, Any]:
        """Extra fields of the "listening" log line (the backend, the store...)."""
        return {}

    def ready_fields(self) -> dict[str, Any]:
        """Extra fields of the "ready" log line, once started."""
        return {}

    def start_failure(self, error: Exception, env_prefix: str) -> StartupError | None:
        """The report for a start() failure a user can fix (None: a bug, which keeps its traceback)."""
        if isinstance(error, ListenError):
            return error.startup(f"{env_prefix}PORT", f"{env_prefix}HOST")
        return None


def run_service(name: str, settings_class: type[S], server: Callable[[S], GrpcService[S]]) -> None:
    """`python -m <name>`: serves until SIGTERM or SIGINT, then stops gracefully; a start-up failure a user can
    fix (servekit.startup) ends the process with one line on stderr and exit status 1.

    `server` builds the service from its settings; it imports the service's modules itself, so that logging
    (`<PREFIX>LOG_LEVEL`) is configured before their heavy imports (models, torch).
    """
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>` dumps every thread's stack
    env_prefix = settings_class.model_config.get("env_prefix") or ""
    configure_logging(os.environ.get(f"{env_prefix}LOG_LEVEL", "INFO"))
    try:
        asyncio.run(_serve(name, settings_class, server, env_prefix))
    except StartupError as error:
        report(name, error)


async def _serve(name: str, settings_class: type[S], server: Callable[[S], GrpcService[S]], env_prefix: str) -> None:
    settings = checked_settings(settings_class)
    try:
        start_metrics(settings.metrics_port)
    except ListenError as error:
        raise error.startup(f"{env_prefix}METRICS_PORT") from None
    service = server(settings)
    try:
        await service.start()
    except Exception as error:
        failure = service.start_failure(error, env_prefix)
        if failure is None:
            raise
        await service.stop()  # release what start() opened before it failed
        raise failure from None
    log = logging.getLogger(name)
    log.info("ready", extra=service.ready_fields())
    signame = await wait_for_signal()
    log.info("shutting down", extra={"signal": signame})
    await service.stop()
