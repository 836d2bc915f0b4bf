"""The whole stack as a user runs it: llm_service, rag_service and gateway as three processes on free ports.

The LLM service runs its default backend (the packaged SmolLM2 model); the RAG service uses an embedded Qdrant
Edge store in a temporary directory and exports prompt traces to a loopback FakeOpik; a subset of the sample
corpus covering every author is ingested through the running RAG service with the real ingestion CLI.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.e2e.stack import (
    STARTUP_TIMEOUT_S,
    Service,
    Stack,
    corpus_subset,
    start_service,
    stop_services,
    wait_ready,
)
from tests.support.fake_opik import running_fake_opik
from tests.support.procs import ROOT, free_port, wait_serving


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The stack, up and ingested; stopped with SIGTERM at the end, and every process must exit cleanly."""
    tmp = tmp_path_factory.mktemp("stack")
    llm_port, llm_metrics, rag_port, rag_metrics, gateway_port = (free_port() for _ in range(5))
    llm_target, rag_target = f"127.0.0.1:{llm_port}", f"127.0.0.1:{rag_port}"
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    services: list[Service] = []
    with running_fake_opik() as opik:
        try:
            # All three start at once; each waits for the one behind it (health checks, /readyz).
            llm_env = {"LLM_PORT": str(llm_port), "LLM_METRICS_PORT": str(llm_metrics), "LLM_N_THREADS": "1"}
            services.append(start_service("llm_service", llm_env, tmp / "llm_service.log"))
            rag_env = {
                "RAG_PORT": str(rag_port),
                "RAG_METRICS_PORT": str(rag_metrics),
                "RAG_LLM_TARGET": llm_target,
                "RAG_STORE_BACKEND": "edge",
                "RAG_QDRANT_PATH": str(tmp / "qdrant"),
                "RAG_HEALTH_INTERVAL_S": "0.5",  # SERVING soon after the LLM service is
                "OPIK_URL_OVERRIDE": opik.url,
                "OPIK_API_KEY": "e2e-key",
                "OPIK_WORKSPACE": "default",
                "OPIK_PROJECT_NAME": "llm-twin-e2e",
            }
            services.append(start_service("rag_service", rag_env, tmp / "rag_service.log"))
            gateway_env = {"GATEWAY_PORT": str(gateway_port), "GATEWAY_RAG_TARGET": rag_target}
            services.append(start_service("gateway", gateway_env, tmp / "gateway.log"))
            llm, rag, gateway = services

            wait_serving(llm_target, "llmtwin.llm.v1.LlmService", timeout=STARTUP_TIMEOUT_S)
            wait_serving(rag_target, "llmtwin.rag.v1.RagService", timeout=STARTUP_TIMEOUT_S)
            documents = corpus_subset({"article": 2, "post": 3, "repository": 1})
            subset = tmp / "corpus_subset.jsonl"
            subset.write_text("".join(json.dumps(doc) + "\n" for doc in documents))
            ingest = subprocess.run(
                [sys.executable, "-m", "rag_service.ingest", str(subset), "--target", rag_target],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=STARTUP_TIMEOUT_S,
                check=False,
            )
            assert ingest.returncode == 0, ingest.stderr
            assert f"{len(documents)} documents" in ingest.stdout and "via the RAG service" in ingest.stdout
            wait_ready(gateway_url + "/readyz", gateway, STARTUP_TIMEOUT_S)

            yield Stack(
                llm=llm,
                rag=rag,
                gateway=gateway,
                llm_target=llm_target,
                rag_target=rag_target,
                gateway_url=gateway_url,
                llm_metrics_url=f"http://127.0.0.1:{llm_metrics}/metrics",
                rag_metrics_url=f"http://127.0.0.1:{rag_metrics}/metrics",
                opik=opik,
                ingested=documents,
            )
        finally:
            codes = stop_services(list(reversed(services)))  # gateway first, the LLM service last
    logs = "\n".join(f"--- {s.name}\n{s.log_text()[-2000:]}" for s in services)
    assert codes == {"llm_service": 0, "rag_service": 0, "gateway": 0}, f"{codes}\n{logs}"
    assert "Application shutdown complete" in gateway.log_text(), logs
