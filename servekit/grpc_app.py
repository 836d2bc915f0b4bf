"""A grpc.aio server with what every service of ours has: health, reflection (v1 and v1alpha), a clean stop."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Iterable, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection, reflection_pb2
from prometheus_client import start_http_server

from servekit.auth import server_interceptors
from servekit.decoding import DecodeErrorInterceptor
from servekit.settings import DEFAULT_MAX_CONNECTION_AGE_GRACE_S, DEFAULT_MAX_CONNECTION_AGE_S, GrpcServerSettings
from servekit.startup import ListenError, describe_os_error, why_not_bindable
from servekit.tls import ServerTls

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"
# Largest message a service takes or sends (grpc's default is 4 MiB). Requests are small (a RAG query is at
# most RAG_MAX_QUERY_CHARS, a prompt at most the model's input limit); the one large message is a document
# streamed to IngestDocuments, so this is sized for long articles and repositories. Larger messages are
# refused by grpc itself with RESOURCE_EXHAUSTED before any of our code runs (docs/reliability.md).
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.so_reuseport", 0),
]


def server_options(
    max_connection_age_s: float = DEFAULT_MAX_CONNECTION_AGE_S,
    max_connection_age_grace_s: float = DEFAULT_MAX_CONNECTION_AGE_GRACE_S,
) -> list[tuple[str, int]]:
    """Our server options; a connection age of 0 leaves connections open forever (gRPC's default)."""
    options = list(_OPTIONS)
    if max_connection_age_s > 0:
        options += [
            ("grpc.max_connection_age_ms", max(1, round(max_connection_age_s * 1000))),
            ("grpc.max_connection_age_grace_ms", round(max_connection_age_grace_s * 1000)),
        ]
    return options


class GrpcApp:
    """Owns the server: `""` is SERVING while the process runs; the named service follows set_serving()."""

    def __init__(
        self,
        service_name: str,
        extra_services: Iterable[str] = (),
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
        *,
        max_connection_age_s: float = DEFAULT_MAX_CONNECTION_AGE_S,
        max_connection_age_grace_s: float = DEFAULT_MAX_CONNECTION_AGE_GRACE_S,
    ):
        self.service_name = service_name
        # Innermost: undecodable requests to our service become INVALID_ARGUMENT, not UNKNOWN.
        chain = [*interceptors, DecodeErrorInterceptor((service_name,))]
        options = server_options(max_connection_age_s, max_connection_age_grace_s)
        self.server = grpc.aio.server(interceptors=chain, options=options)
        self.health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        names = [service_name, *extra_services, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name]
        names += [reflection.SERVICE_NAME, REFLECTION_V1]
        reflection.enable_server_reflection(names, self.server)
        _add_reflection_v1(self.server, reflection.aio.ReflectionServicer(names))
        self.port = 0

    async def start(self, host: str, port: int, credentials: grpc.ServerCredentials | None = None) -> int:
        """Binds (TLS with `credentials`) and starts; returns the bound port (0: any free). Starts NOT_SERVING.

        ListenError (an OSError) when the address cannot be bound, with the reason found by trying it.
        """
        address = f"{host}:{port}"
        try:
            if credentials is None:
                self.port = self.server.add_insecure_port(address)
            else:
                self.port = self.server.add_secure_port(address, credentials)
        except RuntimeError:  # grpcio's "Failed to bind to address ..." says nothing of the cause
            self.port = 0
        if not self.port:
            raise ListenError(address, why_not_bindable(host, port))
        await self.health.set("", SERVING)
        await self.health.set(self.service_name, NOT_SERVING)
        await self.server.start()
        return self.port

    async def set_serving(self, serving: bool) -> None:
        """Reports the named service SERVING or NOT_SERVING."""
        await self.health.set(self.service_name, SERVING if serving else NOT_SERVING)

    async def stop(self, grace_s: float, drain_s: float = 0.0) -> None:
        """NOT_SERVING everywhere; after `drain_s` (time for load balancers to see it) refuse new calls and
        let in-flight calls finish within the grace period."""
        await self.health.enter_graceful_shutdown()
        if drain_s:
            await asyncio.sleep(drain_s)
        await self.server.stop(grace_s)


def secured_app(service_name: str, domain: str, settings: GrpcServerSettings) -> tuple[GrpcApp, ServerTls]:
    """The service's GrpcApp with its bearer-token check (none without tokens), and its TLS configuration."""
    auth = server_interceptors(
        settings.auth_tokens,
        domain,
        open_health=settings.auth_open_health,
        open_reflection=settings.auth_open_reflection,
    )
    app = GrpcApp(
        service_name,
        interceptors=auth,
        max_connection_age_s=settings.max_connection_age_s,
        max_connection_age_grace_s=settings.max_connection_age_grace_s,
    )
    return app, settings.server_tls()


def _add_reflection_v1(server: grpc.aio.Server, servicer: object) -> None:
    # grpcio-reflection ships only v1alpha; v1 has the same messages under a new name, so the same
    # servicer answers both (grpcurl and ghz try v1 first).
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,  # type: ignore[attr-defined]
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(REFLECTION_V1, {"ServerReflectionInfo": handler}),)
    )


def start_metrics(port: int, host: str = "127.0.0.1") -> None:
    """Serves Prometheus /metrics over HTTP on a background thread (port 0: off); ListenError when taken."""
    if port:
        try:
            start_http_server(port, addr=host)
        except OSError as error:
            raise ListenError(f"{host}:{port}", describe_os_error(error)) from None


async def wait_for_signal() -> str:
    """Returns the name of the first SIGTERM or SIGINT received."""
    loop = asyncio.get_running_loop()
    got: asyncio.Future[str] = loop.create_future()

    def received(sig: signal.Signals) -> None:
        if not got.done():
            got.set_result(sig.name)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, received, sig)
    try:
        return await got
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def watch_health(app: GrpcApp, check: object, interval_s: float) -> None:
    """Keeps the service's health in step with `check()` (an async callable returning bool).

    A check that raises counts as not serving; its error is logged when it first appears or changes, not at
    every poll.
    """
    last: bool | None = None
    last_error = ""
    while True:
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that arrives as the
            # check completes, and stop() then waits forever for this task.
            async with asyncio.timeout(max(interval_s, 1.0)):
                ok = bool(await check())  # type: ignore[operator]
            last_error = ""
        except Exception as error:
            ok = False
            described = "the health check timed out" if isinstance(error, TimeoutError) else repr(error)
            if described != last_error:
                log.warning(
                    "health check failed",
                    exc_info=error,
                    extra={"service": app.service_name, "error": described},
                )
                last_error = described
        if ok != last:
            log.info("health changed", extra={"service": app.service_name, "serving": ok})
            await app.set_serving(ok)
            last = ok
        await asyncio.sleep(interval_s)
