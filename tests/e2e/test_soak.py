"""bench/soak.py for a few seconds: the stack it starts takes mixed traffic with no errors and stops cleanly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.procs import ROOT

pytestmark = pytest.mark.slow

KINDS = ("answer_stream", "answer", "retrieve", "sse")


def test_a_short_soak_has_no_errors_and_reports_latency_and_memory(tmp_path: Path) -> None:
    report_file = tmp_path / "soak.json"
    flags = ["--duration", "8", "--window", "4", "--documents", "12", "--json", str(report_file)]
    run = subprocess.run(
        [sys.executable, "bench/soak.py", *flags, "--keep-logs", str(tmp_path / "logs")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(report_file.read_text())
    total = report["total"]
    assert total["errors"] == {}
    assert all(total[kind]["n"] > 0 and 0 < total[kind]["p50_ms"] <= total[kind]["p99_ms"] for kind in KINDS)
    assert total["sse"]["ttft_p50_ms"] > 0 and total["answer_stream"]["ttft_p50_ms"] > 0
    assert len(report["windows"]) >= 2 and sum(w["requests"] for w in report["windows"]) == total["requests"]
    assert all(rss["start"] > 0 and rss["end"] > 0 for rss in report["rss_kb"].values())
    assert report["exit_codes"] == {"gateway": 0, "rag_service": 0, "llm_service": 0}
    assert "errors by code: none" in run.stdout
