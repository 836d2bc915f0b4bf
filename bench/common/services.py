"""The services as processes: start one on a free port and wait until it serves, stop it, fill its store."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from common.paths import ROOT
from rag_service.ingest_client import ingest_via_service
from rag_service.types import Document, IngestReport
from tests.support.procs import free_port, start_module, wait_http, wait_serving

LLM_SERVICE = "llmtwin.llm.v1.LlmService"
RAG_SERVICE = "llmtwin.rag.v1.RagService"
# module -> (prefix of its settings, gRPC service its health check names; None: HTTP /readyz)
MODULES = {"llm_service": ("LLM", LLM_SERVICE), "rag_service": ("RAG", RAG_SERVICE), "gateway": ("GATEWAY", None)}


@dataclass
class Service:
    """A service process and its address."""

    proc: subprocess.Popen[bytes]
    target: str

    def stop(self) -> None:
        """SIGTERM (graceful shutdown), then wait."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def spawn(module: str, env: dict[str, str], log: Path, *, cwd: Path = ROOT) -> Service:
    """`python -m module` run from `cwd` on a free port (metrics off), once it serves: SERVING for the gRPC
    services, /readyz 200 for the gateway. Stopped again when it does not come up."""
    port = free_port()
    prefix, health = MODULES[module]
    env = env | {f"{prefix}_PORT": str(port)} | ({f"{prefix}_METRICS_PORT": "0"} if health else {})
    service = Service(start_module(module, env, log, cwd=cwd), f"127.0.0.1:{port}")
    try:
        if health:
            wait_serving(service.target, health, timeout=120)
        else:
            wait_http(f"http://{service.target}/readyz", 60)
    except BaseException:
        service.stop()
        raise
    return service


async def ingest_documents(target: str, documents: Sequence[Document]) -> IngestReport:
    """The documents sent to a running RAG service through IngestDocuments; every one must be written."""
    report = await ingest_via_service(target, documents, connect_timeout=10)
    assert report is not None and not report.rejected, report
    return report
