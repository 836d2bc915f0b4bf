"""An in-process LLM service on a free loopback port, for tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc

from llm_service.backends.base import Backend
from llm_service.backends.echo import EchoBackend
from llm_service.server import LlmServer
from llm_service.settings import Settings
from llmtwin.llm.v1 import llm_service_pb2_grpc
from servekit.admission import Admission
from servekit.service import GrpcService


@dataclass
class RunningLlm:
    """A started LLM service with a client stub."""

    server: LlmServer
    port: int
    channel: grpc.aio.Channel
    stub: llm_service_pb2_grpc.LlmServiceStub

    @property
    def target(self) -> str:
        """host:port to dial."""
        return f"127.0.0.1:{self.port}"


@asynccontextmanager
async def running_llm(backend: Backend | None = None, **overrides: object) -> AsyncIterator[RunningLlm]:
    """Starts an LLM service (port 0, metrics off) and stops it on exit."""
    settings = Settings(
        port=0, metrics_port=0, health_interval_s=0.2, shutdown_grace_s=2, shutdown_drain_s=0, **overrides
    )
    server = LlmServer(settings, backend)
    async with serving(server) as (port, channel):
        yield RunningLlm(server, port, channel, llm_service_pb2_grpc.LlmServiceStub(channel))


@asynccontextmanager
async def serving(server: GrpcService[Any]) -> AsyncIterator[tuple[int, grpc.aio.Channel]]:
    """Starts `server`; yields its port and a plaintext channel to it, closed (and the server stopped) on exit."""
    port = await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield port, channel
    finally:
        await channel.close()
        await server.stop()


async def stopped_producing(backend: EchoBackend, *admissions: Admission, timeout: float = 5.0) -> int:
    """Waits until no generation holds a slot, checks the backend then produces nothing more; its token count."""
    deadline = asyncio.get_running_loop().time() + timeout
    while any(a.in_flight for a in admissions):
        assert asyncio.get_running_loop().time() < deadline, "the generation did not stop"
        await asyncio.sleep(0.01)
    produced = backend.produced
    await asyncio.sleep(0.2)
    assert backend.produced == produced, "tokens were still produced after the generation was released"
    return produced
