"""`make up`'s script as a user runs it: ingest into an empty store, three services up, Ctrl-C stops them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.support.procs import ROOT, free_port

pytestmark = pytest.mark.slow


def read_until(proc: subprocess.Popen[str], marker: str, timeout: float) -> str:
    """Reads the script's output until a line contains `marker`."""
    deadline, seen = time.monotonic() + timeout, []
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        seen.append(line)
        if marker in line:
            return "".join(seen)
    raise AssertionError(f"no {marker!r} within {timeout} s:\n{''.join(seen)}")


def test_up_ingests_an_empty_store_serves_the_page_and_ctrl_c_stops_everything(tmp_path):
    ports = {name: str(free_port()) for name in ("LLM_PORT", "RAG_PORT", "GATEWAY_PORT", "LLM_METRICS_PORT")}
    env = {
        **os.environ,
        **ports,
        "RAG_METRICS_PORT": str(free_port()),
        "RAG_QDRANT_PATH": str(tmp_path / "qdrant"),
        "STACK_LOG_DIR": str(tmp_path / "logs"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "scripts.up"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out = read_until(proc, "LLM Twin is up", timeout=240)
        assert "112 documents" in out and "chunks written" in out
        base = f"http://127.0.0.1:{ports['GATEWAY_PORT']}"
        assert f"open {base}/" in out
        with urllib.request.urlopen(f"{base}/", timeout=10) as page:
            assert "LLM Twin" in page.read().decode()
        with urllib.request.urlopen(f"{base}/docs", timeout=10) as docs:
            assert docs.status == 200
        body = json.dumps({"query": "What does Elena Varga measure?", "parameters": {"max_new_tokens": 8}}).encode()
        request = urllib.request.Request(f"{base}/v1/answer", body, {"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            answer = json.loads(response.read())
        assert answer["context"]["documents"] and answer["final"]["usage"]["completion_tokens"] >= 1
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, rest
    assert rest.strip().endswith("stopped")
    for name in ("llm_service", "rag_service", "gateway"):
        log = (tmp_path / "logs" / f"{name}.log").read_text()
        assert "Traceback" not in log, log[-3000:]
