"""Soak: mixed traffic against a whole stack for a set time; errors by code, latency over time, memory.

Starts llm_service, rag_service and gateway as processes on free loopback ports (echo backend by default,
so what is soaked is our serving code, not the model's arithmetic; `--backend embedded` for the real model),
ingests a slice of the sample corpus through the running RAG service, then runs closed-loop workers of four
kinds at once until `--duration` seconds have passed:

    answer_stream  RagService/AnswerStream over gRPC (latency = last message; ttft = first delta)
    answer         RagService/Answer over gRPC
    retrieve       RagService/Retrieve over gRPC
    sse            POST /v1/answer/stream on the gateway (server-sent events, read to the `done` event)

and reports, per time window, requests and errors by code with latency percentiles per kind, plus each
service's resident memory (VmRSS from /proc/<pid>/status) after warm-up, at every window and at the end.
Every process must stop cleanly on SIGTERM at the end. Exit status 0 when there were no errors and every
service exited 0; 1 otherwise.

    .venv/bin/python bench/soak.py [--duration 600] [--window 60] [--workers 2] [--backend echo]
        [--token-delay 0.005] [--max-new-tokens 32] [--json soak.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "gen" / "python")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

from llmtwin.llm.v1 import llm_service_pb2 as llm_pb  # noqa: E402
from llmtwin.rag.v1 import rag_service_pb2 as pb  # noqa: E402
from llmtwin.rag.v1 import rag_service_pb2_grpc as pb_grpc  # noqa: E402
from rag_service.documents import parse_jsonl  # noqa: E402
from rag_service.ingest import ingest_via_service  # noqa: E402
from tests.support.procs import free_port  # noqa: E402

KINDS = ("answer_stream", "answer", "retrieve", "sse")
SERVICES = ("llm_service", "rag_service", "gateway")
STARTUP_TIMEOUT_S = 120.0
CALL_TIMEOUT_S = 60.0


@dataclass(slots=True)
class Sample:
    """One finished request."""

    at: float  # seconds since the traffic started, when the request finished
    kind: str
    code: str  # "OK", a gRPC status name, or HTTP_<status>
    latency_s: float
    ttft_s: float | None = None


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


def rss_kb(pid: int) -> int:
    """Resident set size of a process in kB, from /proc/<pid>/status (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


# ---- the stack -------------------------------------------------------------------------------------------


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
    services = ((stack.llm_target, "llmtwin.llm.v1.LlmService"), (stack.rag_target, "llmtwin.rag.v1.RagService"))
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


# ---- traffic ---------------------------------------------------------------------------------------------


def questions() -> list[str]:
    """The sample question set."""
    lines = (ROOT / "data" / "questions.jsonl").read_text().splitlines()
    return [json.loads(line)["question"] for line in lines if line.strip()]


class Traffic:
    """Closed-loop workers of every kind; each appends a Sample per finished request."""

    def __init__(self, stack: Stack, max_new_tokens: int, seed: int) -> None:
        self.stack = stack
        self.samples: list[Sample] = []
        self.questions = questions()
        self.random = random.Random(seed)
        self.parameters = llm_pb.GenerationParameters(max_new_tokens=max_new_tokens)
        self.max_new_tokens = max_new_tokens
        self.start = 0.0

    def _request(self) -> pb.AnswerRequest:
        return pb.AnswerRequest(query=self.random.choice(self.questions), parameters=self.parameters)

    async def answer_stream(self, stub: pb_grpc.RagServiceStub, http: httpx.AsyncClient) -> tuple[str, float | None]:
        """One AnswerStream, read to the end."""
        t0, ttft, final = time.perf_counter(), None, False
        async for message in stub.AnswerStream(self._request(), timeout=CALL_TIMEOUT_S):
            if message.HasField("delta") and ttft is None:
                ttft = time.perf_counter() - t0
            final = final or message.HasField("final")
        return ("OK" if final else "STREAM_TRUNCATED"), ttft

    async def answer(self, stub: pb_grpc.RagServiceStub, http: httpx.AsyncClient) -> tuple[str, float | None]:
        """One unary Answer."""
        response = await stub.Answer(self._request(), timeout=CALL_TIMEOUT_S)
        # The answer's text, not its token count: a question about someone who is not an author in the store
        # is answered by the service itself, with no generation.
        return ("OK" if response.final.answer.strip() else "EMPTY_ANSWER"), None

    async def retrieve(self, stub: pb_grpc.RagServiceStub, http: httpx.AsyncClient) -> tuple[str, float | None]:
        """One Retrieve."""
        response = await stub.Retrieve(
            pb.RetrieveRequest(query=self.random.choice(self.questions)), timeout=CALL_TIMEOUT_S
        )
        return ("OK" if response.context.documents else "NO_CONTEXT"), None

    async def sse(self, stub: pb_grpc.RagServiceStub, http: httpx.AsyncClient) -> tuple[str, float | None]:
        """One gateway SSE answer, read to its `done` (or `error`) event."""
        body = {"query": self.random.choice(self.questions), "parameters": {"max_new_tokens": self.max_new_tokens}}
        t0, ttft, event = time.perf_counter(), None, ""
        async with http.stream("POST", "/v1/answer/stream", json=body) as response:
            if response.status_code != 200:
                await response.aread()
                return f"HTTP_{response.status_code}", None
            async for line in response.aiter_lines():
                if line.startswith("event:"):
                    event = line.partition(":")[2].strip()
                elif line.startswith("data:") and event == "delta" and ttft is None:
                    ttft = time.perf_counter() - t0
                elif line.startswith("data:") and event == "error":
                    return json.loads(line.partition(":")[2])["error"]["status"], ttft
                elif line.startswith("data:") and event == "done":
                    return "OK", ttft
        return "STREAM_TRUNCATED", ttft

    async def worker(self, kind: str, until: float) -> None:
        """Calls `kind` back to back until the monotonic time `until`."""
        call: Callable[[Any, Any], Coroutine[Any, Any, tuple[str, float | None]]] = getattr(self, kind)
        async with (
            grpc.aio.insecure_channel(self.stack.rag_target) as channel,
            httpx.AsyncClient(base_url=self.stack.gateway_url, timeout=CALL_TIMEOUT_S) as http,
        ):
            stub = pb_grpc.RagServiceStub(channel)
            while time.monotonic() < until:
                began = time.perf_counter()
                try:
                    code, ttft = await call(stub, http)
                except grpc.aio.AioRpcError as exc:
                    code, ttft = exc.code().name, None
                except httpx.HTTPError as exc:
                    code, ttft = f"HTTP_{type(exc).__name__}", None
                ended = time.perf_counter()
                self.samples.append(Sample(ended - self.start, kind, code, ended - began, ttft))


# ---- report ----------------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of values; 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def summarize(samples: list[Sample]) -> dict[str, Any]:
    """Counts, errors by code and latency percentiles (ms) per kind, for a set of samples."""
    out: dict[str, Any] = {"requests": len(samples), "errors": dict(Counter(s.code for s in samples if s.code != "OK"))}
    for kind in KINDS:
        ok = [s for s in samples if s.kind == kind and s.code == "OK"]
        latencies = [s.latency_s * 1000 for s in ok]
        entry = {
            "n": len(ok),
            "p50_ms": round(percentile(latencies, 50), 1),
            "p95_ms": round(percentile(latencies, 95), 1),
            "p99_ms": round(percentile(latencies, 99), 1),
        }
        ttfts = [s.ttft_s * 1000 for s in ok if s.ttft_s is not None]
        if ttfts:
            entry["ttft_p50_ms"] = round(percentile(ttfts, 50), 1)
        out[kind] = entry
    return out


def print_window(start: float, end: float, summary: dict[str, Any], rss: dict[str, int]) -> None:
    """One line per window: requests, errors, p50/p95/p99 per kind, RSS of each service."""
    parts = [f"[{start:6.0f}-{end:4.0f} s] {summary['requests']:5d} req  errors {summary['errors'] or 0}"]
    for kind in KINDS:
        k = summary[kind]
        parts.append(f"{kind} {k['p50_ms']:.0f}/{k['p95_ms']:.0f}/{k['p99_ms']:.0f}")
    parts.append("RSS MB " + " ".join(f"{name.split('_')[0]}={kb / 1024:.0f}" for name, kb in rss.items()))
    print("  ".join(parts), flush=True)


# ---- main ------------------------------------------------------------------------------------------------


async def soak(args: argparse.Namespace, stack: Stack) -> dict[str, Any]:
    """Readiness, ingestion, warm-up, traffic with per-window reports; the run's report."""
    await wait_ready(stack)
    lines = (ROOT / "data" / "corpus.jsonl").read_text().splitlines()
    documents, _ = parse_jsonl(lines[: args.documents])
    report = await ingest_via_service(stack.rag_target, documents, connect_timeout=10)
    assert report is not None and not report.rejected, report
    traffic = Traffic(stack, args.max_new_tokens, args.seed)
    # Warm-up (first requests load lazy state: author list, model info): not counted, then the baseline RSS.
    await asyncio.gather(*(traffic.worker(kind, time.monotonic() + 2) for kind in KINDS))
    traffic.samples.clear()
    rss_start = stack.sample_rss()
    print(f"soak: {args.duration:g} s, {args.workers} workers per kind ({', '.join(KINDS)}), backend {args.backend}")
    print("window            requests  errors  latency p50/p95/p99 ms per kind  RSS", flush=True)
    traffic.start = time.perf_counter()
    until = time.monotonic() + args.duration
    workers = [asyncio.create_task(traffic.worker(k, until)) for k in KINDS for _ in range(args.workers)]
    windows = []
    window_start = 0.0
    while not all(w.done() for w in workers):
        left = window_start + args.window - (time.perf_counter() - traffic.start)
        await asyncio.wait(workers, timeout=max(0.0, left))
        now = time.perf_counter() - traffic.start
        finished = all(w.done() for w in workers)
        if now >= window_start + args.window or finished:
            in_window = [s for s in traffic.samples if window_start <= s.at < now or (finished and s.at >= now)]
            if finished and not in_window:
                break
            rss = stack.sample_rss()
            summary = summarize(in_window)
            print_window(window_start, now, summary, rss)
            windows.append({"start_s": round(window_start, 1), "end_s": round(now, 1), **summary, "rss_kb": rss})
            window_start = now
    for w in workers:
        w.result()  # a worker that crashed is a bug in this script: raise it
    rss_end = stack.sample_rss()
    total = summarize(traffic.samples)
    return {
        "duration_s": args.duration,
        "backend": args.backend,
        "workers_per_kind": args.workers,
        "total": total,
        "windows": windows,
        "rss_kb": {name: {"start": rss_start[name], "end": rss_end[name]} for name in SERVICES},
    }


def main(argv: list[str] | None = None) -> int:
    """Parses the flags, runs the soak, prints the summary; exit status 0 when clean."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of traffic (default 600)")
    parser.add_argument("--window", type=float, default=0.0, help="report window in s (default duration/10)")
    parser.add_argument("--workers", type=int, default=2, help="concurrent workers per traffic kind (default 2)")
    parser.add_argument("--backend", default="echo", help="LLM backend: echo (default) or embedded")
    parser.add_argument("--token-delay", type=float, default=0.005, help="echo: seconds between tokens")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="tokens per answer (default 32)")
    parser.add_argument("--documents", type=int, default=40, help="corpus documents to ingest (default 40)")
    parser.add_argument("--seed", type=int, default=7, help="question order seed")
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    parser.add_argument("--keep-logs", type=Path, help="directory for the services' logs (default: a temp dir)")
    args = parser.parse_args(argv)
    args.window = args.window or max(1.0, args.duration / 10)

    with tempfile.TemporaryDirectory(prefix="soak-") as tmp_name:
        tmp = args.keep_logs or Path(tmp_name)
        tmp.mkdir(parents=True, exist_ok=True)
        stack = start_stack(tmp, args.backend, args.token_delay)
        try:
            report = asyncio.run(soak(args, stack))
        finally:
            exit_codes = stop_stack(stack)
    report["exit_codes"] = exit_codes
    total = report["total"]
    print(f"\ntotal: {total['requests']} requests, errors by code: {total['errors'] or 'none'}")
    for kind in KINDS:
        k = total[kind]
        ttft = f", ttft p50 {k['ttft_p50_ms']:.0f} ms" if "ttft_p50_ms" in k else ""
        latency = f"p50 {k['p50_ms']:.0f} / p95 {k['p95_ms']:.0f} / p99 {k['p99_ms']:.0f} ms"
        print(f"  {kind:14s} {k['n']:6d} ok  {latency}{ttft}")
    for name, rss in report["rss_kb"].items():
        print(f"  {name:12s} RSS {rss['start'] / 1024:.1f} MB -> {rss['end'] / 1024:.1f} MB")
    print(f"  exit codes: {exit_codes}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    clean = not total["errors"] and all(code == 0 for code in exit_codes.values())
    return 0 if clean else 1


if __name__ == "__main__":
    raise SystemExit(main())
