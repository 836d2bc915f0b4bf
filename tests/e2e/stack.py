"""The running stack for the end-to-end tests: start and stop its processes, read their logs and metrics, poll.

Every client test asks the same question with default retrieval options, so that after the first answer the
LLM's prompt cache serves the long prompt and each test pays only for its few generated tokens.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from tests.support.fake_opik import FakeOpik
from tests.support.procs import ROOT, wait_http

T = TypeVar("T")

CORPUS = ROOT / "data" / "corpus.jsonl"
# The author is named in full, so self-query resolves it without asking the LLM (match_author).
QUESTION = "What does Elena Varga think about continuous batching?"
AUTHOR = "Elena Varga"
# Short answers: the embedded model shares 2 cores with everything else.
MAX_NEW_TOKENS = 24
STARTUP_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0


@dataclass
class Service:
    """One running service process and its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def log_text(self) -> str:
        """Everything the process printed so far."""
        return self.log.read_text(errors="replace")

    def json_log(self) -> list[dict[str, Any]]:
        """The JSON log lines written so far (other output skipped)."""
        lines = []
        for line in self.log_text().splitlines():
            if line.startswith("{"):
                try:
                    lines.append(json.loads(line))
                except json.JSONDecodeError:  # a line still being written
                    continue
        return lines


@dataclass
class Stack:
    """The three services, how to reach them, and the FakeOpik the RAG service exports traces to."""

    llm: Service
    rag: Service
    gateway: Service
    llm_target: str
    rag_target: str
    gateway_url: str
    llm_metrics_url: str
    rag_metrics_url: str
    opik: FakeOpik
    ingested: list[dict[str, Any]] = field(default_factory=list)
    question: str = QUESTION
    author: str = AUTHOR
    max_new_tokens: int = MAX_NEW_TOKENS

    def llm_metric(self, sample: str) -> float:
        """One Prometheus sample of the LLM service, e.g. 'llm_requests_total{code="OK",method="Generate"}'."""
        return metric_value(httpx.get(self.llm_metrics_url, timeout=5).text, sample)

    def rag_metric(self, sample: str) -> float:
        """One Prometheus sample of the RAG service."""
        return metric_value(httpx.get(self.rag_metrics_url, timeout=5).text, sample)


def metric_value(exposition: str, sample: str) -> float:
    """The value of one sample (name and labels exactly as exposed) in Prometheus text; 0 when absent."""
    match = re.search(rf"^{re.escape(sample)} (\S+)$", exposition, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def wait_until(condition: Callable[[], T | None], timeout_s: float, interval_s: float = 0.1) -> T:
    """Poll until `condition()` returns something truthy, and return it; AssertionError on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        if result := condition():
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout_s} s: {condition}")
        time.sleep(interval_s)


def corpus_subset(per_author: dict[str, int]) -> list[dict[str, Any]]:
    """The first documents of each kind for every author of the sample corpus (counts per kind)."""
    taken: dict[tuple[str, str], int] = {}
    subset = []
    for line in CORPUS.read_text().splitlines():
        doc = json.loads(line)
        key = (doc["author_id"], doc["kind"])
        if taken.get(key, 0) < per_author[doc["kind"]]:
            taken[key] = taken.get(key, 0) + 1
            subset.append(doc)
    return subset


def start_service(name: str, env: dict[str, str], log: Path) -> Service:
    """Starts `python -m name` with extra env and without OPIK_TRACK_DISABLE, logging to a file."""
    # The suite's conftest turns Opik off for in-process tests; this stack exports to the FakeOpik.
    full_env = {k: v for k, v in os.environ.items() if k != "OPIK_TRACK_DISABLE"} | env
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", name], cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT
        )
    return Service(name, process, log)


def wait_ready(url: str, service: Service, timeout_s: float) -> None:
    """Polls an HTTP URL until it answers 200; fails at once if the service exited."""

    def alive() -> None:
        assert service.process.poll() is None, f"{service.name} exited early:\n{service.log_text()[-3000:]}"

    try:
        wait_http(url, timeout_s, alive)
    except TimeoutError as error:
        raise TimeoutError(f"{error}:\n{service.log_text()[-3000:]}") from None


def stop_services(services: list[Service]) -> dict[str, int]:
    """SIGTERM to every service, in the order given, then their exit statuses (killed after a timeout)."""
    for service in services:
        if service.process.poll() is None:
            service.process.send_signal(signal.SIGTERM)
    codes = {}
    for service in services:
        try:
            codes[service.name] = service.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            service.process.kill()
            codes[service.name] = service.process.wait()
    return codes
