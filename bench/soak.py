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
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from common.data import corpus_documents
from common.services import ingest_documents
from common.stats import upper_percentile
from soak_stack import SERVICES, Stack, start_stack, stop_stack, wait_ready
from soak_traffic import KINDS, Sample, Traffic

# ---- report ----------------------------------------------------------------------------------------------


def summarize(samples: list[Sample]) -> dict[str, Any]:
    """Counts, errors by code and latency percentiles (ms) per kind, for a set of samples."""
    out: dict[str, Any] = {"requests": len(samples), "errors": dict(Counter(s.code for s in samples if s.code != "OK"))}
    for kind in KINDS:
        ok = [s for s in samples if s.kind == kind and s.code == "OK"]
        latencies = [s.latency_s * 1000 for s in ok]
        entry = {
            "n": len(ok),
            "p50_ms": round(upper_percentile(latencies, 50), 1),
            "p95_ms": round(upper_percentile(latencies, 95), 1),
            "p99_ms": round(upper_percentile(latencies, 99), 1),
        }
        ttfts = [s.ttft_s * 1000 for s in ok if s.ttft_s is not None]
        if ttfts:
            entry["ttft_p50_ms"] = round(upper_percentile(ttfts, 50), 1)
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
    await ingest_documents(stack.rag_target, corpus_documents(args.documents))
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
