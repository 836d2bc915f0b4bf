"""`make bench`: every layer of the stack measured in one run, against the targets of issue 8.

Runs the suites one after another on loopback (each starts its own service processes), collects their
figures as dicts and writes:
  docs/bench/results.json   every figure, with the run's settings and timestamps
  docs/bench/results.md     the targets table (figure, target, met / not met) and the details
  docs/bench/*.png          relay msgs/s vs streams, Retrieve rate and p99 vs clients, TTFT vs blocking answer

Suites: bench/llm_bench.py (relay vs a bare grpc.aio loop), bench/rag_bench.py (raw embedding rate,
Retrieve at 1/8/32/64 clients with batching on/off, the RAG's share of TTFT), bench/stack_bench.py
(pre-retrieval per step, streaming vs blocking, gateway overhead, 200 streams held), bench/answer_eval.py
(answer quality and time to first token of the embedded default, through the gateway).

    .venv/bin/python bench/run_all.py            # ~8 minutes on 2 cores
    .venv/bin/python bench/run_all.py --quick    # ~4 minutes, fewer tokens / seconds / questions
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from common.paths import ROOT
from results_details import details
from results_plots import plots
from results_targets import rows, table

__all__ = ["MODES", "collect", "main", "rows", "table", "write"]

OUT = ROOT / "docs" / "bench"

# Per mode: each suite's command-line flags (its own defaults otherwise).
MODES: dict[str, dict[str, list[str]]] = {
    "full": {
        "llm": ["--tokens", "10000", "--skip-embedded"],
        "rag": ["--duration", "5", "--answers", "40", "--skip-embedded"],
        "stack": ["--questions", "12", "--embedded", "6"],
        "answer": ["--gateway", "--examples", "0"],
    },
    "quick": {
        "llm": ["--tokens", "3000", "--skip-embedded"],
        "rag": ["--duration", "2", "--answers", "12", "--skip-embedded"],
        "stack": ["--questions", "6", "--stream-tokens", "50", "--rag-stream-tokens", "300"],
        "answer": ["--gateway", "--examples", "0"],  # all 34 questions (~1.5 min): the baseline is on all
    },
}


async def collect(mode: str, only: set[str]) -> dict[str, Any]:
    """Runs the suites of a mode and returns their figures; a failing suite is recorded, the rest still run."""
    import answer_eval
    import llm_bench
    import rag_bench
    import stack_bench

    suites = {"llm": llm_bench, "rag": rag_bench, "stack": stack_bench, "answer": answer_eval}
    results: dict[str, Any] = {}
    for name, module in suites.items():
        if only and name not in only:
            continue
        flags = MODES[mode][name]
        print(f"\n=== {name}: bench/{module.__name__}.py {' '.join(flags)}", flush=True)
        t0 = time.perf_counter()
        try:
            results[name] = await module.run(module.build_parser().parse_args(flags))
        except Exception as e:  # one failing suite must not lose the others' figures
            results[name] = {"error": repr(e)}
            print(f"{name} failed: {e!r}", flush=True)
        results.setdefault("seconds", {})[name] = round(time.perf_counter() - t0, 1)
    return results


def write(results: dict[str, Any], out: Path) -> None:
    """results.json, results.md and the plots."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    images = plots(results, out)
    meta = results["meta"]
    md = [
        "# Benchmark results",
        "",
        f"`{meta['command']}` on {meta['machine']}, {meta['finished']} ({meta['seconds']:.0f} s, load average "
        f"before {meta['load_before']}). Loopback only; ratios compare figures of the same run.",
        "",
        table(results),
        "",
        details(results),
        *(f"![{name}]({name})" for name in images),
        "",
    ]
    (out / "results.md").write_text("\n".join(md))


def main() -> int:
    """Runs the suites, writes docs/bench/ and prints the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller runs (~4 minutes)")
    parser.add_argument("--only", default="", help="comma-separated suites to run: llm,rag,stack,answer")
    parser.add_argument("--out", type=Path, default=OUT, help="output directory")
    parser.add_argument("--replot", action="store_true", help="rewrite results.md and plots from results.json")
    args = parser.parse_args()
    if args.replot:
        write(json.loads((args.out / "results.json").read_text()), args.out)
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    mode = "quick" if args.quick else "full"
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    began = time.perf_counter()
    results = asyncio.run(collect(mode, {s for s in args.only.split(",") if s}))
    results["meta"] = {
        "mode": mode,
        "command": "make bench" + (" BENCH_FLAGS=--quick" if args.quick else ""),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "finished": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": time.perf_counter() - began,
        "load_before": load,
        "flags": MODES[mode],
    }
    write(results, args.out)
    print("\n" + table(results))
    print(f"\nwrote {args.out}/results.json, results.md and plots in {results['meta']['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
