"""The soak's stack: llm_service, rag_service and gateway started at once as processes on free loopback ports,
waited for, and stopped with SIGTERM (gateway first) with their exit statuses."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
from common.paths import ROOT
from common.procfs import rss_kb
from common.services import LLM_SERVICE, RAG_SERVICE
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.procs import free_port

SERVICES = ("llm_service", "rag_service", "gateway")
STARTUP_TIMEOUT_S = 120.0


@dataclass
class Stack:
    """The three processes and how to reach them."""

    procs: dict[str, subprocess.Popen[bytes]]
    logs: Path
    llm_target: str
    rag_target: str
    gateway_url: str
    rss_kb: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))

    def sample_rss(self) -> dict[str, int]:
        """VmRSS (kB) of each service now, also kept in `rss_kb`."""
        now = {name: rss_kb(proc.pid) for name, proc in self.procs.items()}
        for name, kb in now.items():
            self.rss_kb[name].append(kb)
        return now


def start_stack(tmp: Path, backend: str, token_delay: float) -> Stack:
    """Starts the three services on free ports (metrics off), logging to files under `tmp`."""
    llm_port, rag_port, gateway_port = free_port(), free_port(), free_port()
    common = {k: v for k, v in os.environ.items() if not k.startswith(("LLM_", "RAG_", "GATEWAY_"))}
    common |= {"OPIK_TRACK_DISABLE": "true", "OPIK_SENTRY_ENABLE": "false", "OPIK_ANALYTICS_ENABLE": "false"}
    envs = {
        "llm_service": {
            "LLM_PORT": str(llm_port),
            "LLM_METRICS_PORT": "0",
            "LLM_BACKEND": backend,
            "LLM_ECHO_TOKEN_DELAY_S": str(token_delay),
            "LLM_N_THREADS": "1",
        },
        "rag_service": {
            "RAG_PORT": str(rag_port),
            "RAG_METRICS_PORT": "0",
            "RAG_LLM_TARGET": f"127.0.0.1:{llm_port}",
            "RAG_STORE_BACKEND": "edge",
            "RAG_QDRANT_PATH": str(tmp / "qdrant"),
            "RAG_HEALTH_INTERVAL_S": "0.5",
        },
        "gateway": {
            "GATEWAY_PORT": str(gateway_port),
            "GATEWAY_RAG_TARGET": f"127.0.0.1:{rag_port}",
            "GATEWAY_LOG_LEVEL": "warning",
        },
    }
    procs = {}
    for name in SERVICES:
        with (tmp / f"{name}.log").open("wb") as log:
            procs[name] = subprocess.Popen(
                [sys.executable, "-m", name], cwd=ROOT, env=common | envs[name], stdout=log, stderr=subprocess.STDOUT
            )
    return Stack(procs, tmp, f"127.0.0.1:{llm_port}", f"127.0.0.1:{rag_port}", f"http://127.0.0.1:{gateway_port}")


async def wait_ready(stack: Stack) -> None:
    """Waits for both gRPC services to be SERVING and the gateway's /readyz to answer 200."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    services = ((stack.llm_target, LLM_SERVICE), (stack.rag_target, RAG_SERVICE))
    for target, service in services:
        async with grpc.aio.insecure_channel(target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while True:
                _check_alive(stack)
                try:
                    reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.aio.AioRpcError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{service} not SERVING after {STARTUP_TIMEOUT_S:g} s (logs: {stack.logs})")
                await asyncio.sleep(0.3)
    async with httpx.AsyncClient(timeout=5) as http:
        while True:
            _check_alive(stack)
            try:
                if (await http.get(stack.gateway_url + "/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"gateway not ready after {STARTUP_TIMEOUT_S:g} s (logs: {stack.logs})")
            await asyncio.sleep(0.3)


def _check_alive(stack: Stack) -> None:
    for name, proc in stack.procs.items():
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode} (log: {stack.logs / (name + '.log')})")


def stop_stack(stack: Stack, timeout_s: float = 30.0) -> dict[str, int]:
    """SIGTERM to each service, gateway first; their exit statuses (killed, -9, after the timeout)."""
    for name in reversed(SERVICES):
        if stack.procs[name].poll() is None:
            stack.procs[name].send_signal(signal.SIGTERM)
    codes = {}
    for name in reversed(SERVICES):
        try:
            codes[name] = stack.procs[name].wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            stack.procs[name].kill()
            codes[name] = stack.procs[name].wait()
    return codes
