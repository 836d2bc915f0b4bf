"""`make up`: ingest the sample corpus when the store is empty, start the three services, wait, print the URL.

Ctrl-C (or SIGTERM) stops all three cleanly. Ports come from LLM_PORT, RAG_PORT and GATEWAY_PORT (defaults
50052, 50051, 8000); every other setting of each service passes through its own environment variables.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.error import URLError
from urllib.request import urlopen

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
LOGS = Path(os.environ.get("STACK_LOG_DIR", ROOT / "var" / "logs"))
CORPUS = ROOT / "data" / "corpus.jsonl"
NAMES = ("llm_service", "rag_service", "gateway")


def ensure_corpus() -> None:
    """Ingests the sample corpus into the embedded store when it is empty (before the RAG service owns it)."""
    from rag_service.ingest import IngestSettings, ingest_directly
    from rag_service.store import open_store

    options = IngestSettings().store_options()

    async def count() -> int:
        store = open_store(url=options.url, api_key=options.api_key, path=options.path, backend=options.backend)
        try:
            await store.ensure_collections()
            return await store.count()
        finally:
            await store.aclose()

    if asyncio.run(count()):
        print(f"store ({options.backend}, {options.url or options.path}) already has data: not ingesting")
        return
    from rag_service.documents import parse_jsonl

    documents, _ = parse_jsonl(CORPUS.read_text().splitlines())
    print(f"ingesting the sample corpus ({len(documents)} documents) into {options.path} ...", flush=True)
    report = asyncio.run(ingest_directly(options, documents))
    print(f"  {report.documents_written} documents, {report.chunks_written} chunks written")


def wait_grpc(target: str, service: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    """Waits until a gRPC service reports SERVING."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{service} exited with {proc.returncode}; see {LOGS}")
            try:
                if stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2).status == 1:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.3)
    raise TimeoutError(f"{service} at {target} not ready after {timeout:g} s; see {LOGS}")


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Waits until an HTTP URL answers 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode}; see {LOGS}")
        try:
            with urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (URLError, OSError):
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} not ready after {timeout:g} s; see {LOGS}")


def start(name: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Starts `python -m name`, logging to var/logs/name.log."""
    log = (LOGS / f"{name}.log").open("ab")
    # A session of its own: Ctrl-C in the terminal reaches only this script, which then stops the services
    # one by one with a single SIGTERM each (gateway first), instead of every process at once.
    return subprocess.Popen(
        [sys.executable, "-m", name],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=log,
        stderr=log,
        start_new_session=True,
    )


def main() -> int:
    """Brings the stack up and keeps it up until interrupted."""
    LOGS.mkdir(parents=True, exist_ok=True)
    host = os.environ.get("STACK_HOST", "127.0.0.1")
    llm_port = os.environ.get("LLM_PORT", "50052")
    rag_port = os.environ.get("RAG_PORT", "50051")
    gateway_port = os.environ.get("GATEWAY_PORT", "8000")
    ensure_corpus()
    procs: list[subprocess.Popen[bytes]] = []
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    try:
        llm = start("llm_service", {"LLM_HOST": host, "LLM_PORT": llm_port})
        procs.append(llm)
        rag = start("rag_service", {"RAG_HOST": host, "RAG_PORT": rag_port, "RAG_LLM_TARGET": f"{host}:{llm_port}"})
        procs.append(rag)
        wait_grpc(f"{host}:{llm_port}", "llmtwin.llm.v1.LlmService", llm)
        print(f"llm_service  grpc://{host}:{llm_port}  ready", flush=True)
        wait_grpc(f"{host}:{rag_port}", "llmtwin.rag.v1.RagService", rag)
        print(f"rag_service  grpc://{host}:{rag_port}  ready", flush=True)
        env = {"GATEWAY_HOST": host, "GATEWAY_PORT": gateway_port, "GATEWAY_RAG_TARGET": f"{host}:{rag_port}"}
        gateway = start("gateway", env)
        procs.append(gateway)
        wait_http(f"http://{host}:{gateway_port}/readyz", gateway)
        print(f"\nLLM Twin is up: open http://{host}:{gateway_port}/  (logs in {LOGS}; Ctrl-C stops)\n", flush=True)
        while not stopping and all(p.poll() is None for p in procs):
            time.sleep(0.5)
        for name, p in zip(NAMES, procs, strict=False):
            if p.poll() is not None:
                print(f"{name} exited with {p.returncode}; see {LOGS}", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        print("stopping ...", flush=True)
        for p in reversed(procs):  # gateway first, the LLM last
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        print("stopped", flush=True)
    return 0 if stopping or all(p.returncode == 0 for p in procs) else 1


if __name__ == "__main__":
    sys.exit(main())
