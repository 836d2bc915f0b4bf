"""servekit.service.GrpcService: the hooks run in order around listening, health follows check_health(), stop()
drains then closes, and a port in use is a start-up failure naming the setting."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic_settings import SettingsConfigDict

from servekit.grpc_app import SERVING
from servekit.service import GrpcService
from servekit.settings import GrpcServerSettings

NAME = "test.Service"


class Settings(GrpcServerSettings):
    """A service's settings: its own defaults for the fields the mixin leaves to it."""

    model_config = SettingsConfigDict(env_prefix="TESTSVC_", extra="ignore")

    port: int = 0
    metrics_port: int = 0
    max_concurrent: int = 2
    max_queued: int = 1
    queue_timeout_s: float = 1.0
    shutdown_grace_s: float = 1.0
    health_interval_s: float = 0.01


class Recorder(GrpcService[Settings]):
    """Records its hooks; healthy once `healthy` is set."""

    def __init__(self, settings: Settings):
        super().__init__(settings, NAME, "test.example")
        self.calls: list[str] = []
        self.healthy = asyncio.Event()

    async def open(self) -> None:
        self.calls.append(f"open:{self.app.port}")

    async def load(self) -> None:
        self.calls.append(f"load:{bool(self.app.port)}")

    async def check_health(self) -> bool:
        return self.healthy.is_set()

    async def close(self) -> None:
        self.calls.append("close")

    def describe(self) -> dict[str, Any]:
        return {"kind": "recorder"}


async def health(port: int) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=NAME))
        return answer.status


async def test_hooks_run_around_listening_and_health_follows_the_check() -> None:
    service = Recorder(Settings(shutdown_drain_s=0))
    port = await service.start()
    try:
        assert service.calls == ["open:0", "load:True"]  # opened before binding, loaded once bound
        assert await health(port) != SERVING
        service.healthy.set()
        async with asyncio.timeout(10):
            while await health(port) != SERVING:
                await asyncio.sleep(0.01)
        assert (service.admission.in_flight, service.admission.waiting) == (0, 0)
    finally:
        await service.stop()
    assert service.calls[-1] == "close"


async def test_a_port_in_use_is_a_start_failure_naming_the_port_setting() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        service = Recorder(Settings(port=taken))
        try:
            await service.start()
        except OSError as error:
            failure = service.start_failure(error, "TESTSVC_")
        else:
            raise AssertionError("started on a port in use")
        finally:
            await service.stop()
    assert str(failure) == f"cannot listen on 127.0.0.1:{taken} (TESTSVC_PORT): address already in use"
    assert service.start_failure(ValueError("a bug"), "TESTSVC_") is None
