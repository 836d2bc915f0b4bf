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
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
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


def _get(data: dict[str, Any], *path: Any) -> Any:
    """data[p0][p1]...; None when any key is missing (a suite skipped or failed). JSON turns int keys to str."""
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key, data.get(str(key)))  # type: ignore[assignment]
        if data is None:
            return None
    return data


Row = tuple[str, str, str, bool | None]  # figure, value, target, met (None: no target)


def _row(name: str, value: float | None, fmt: str, target: str, ok: Callable[[float], bool] | None) -> Row:
    if value is None:
        return (name, "not measured", target, False if ok else None)
    return (name, fmt.format(value), target, ok(value) if ok else None)


def rows(r: dict[str, Any]) -> list[Row]:
    """The targets table of issue 8 §2, plus figures that have no target."""
    out: list[Row] = []
    llm = r.get("llm", {})
    for level in (1, 8, 32):
        ours, ref = _get(llm, "echo", level), _get(llm, "reference", level)
        if not (ours and ref):
            out.append(_row(f"Relay vs bare grpc.aio loop, {level} streams", None, "", "≥ 0.7×", lambda v: v >= 0.7))
            continue
        cpu = ours["tok_per_cpu_s"] / ref["tok_per_cpu_s"] if ref["tok_per_cpu_s"] else None
        wall = ours["tok_s"] / ref["tok_s"]
        name = f"Relay msgs/s vs bare grpc.aio loop, {level} stream{'s' * (level > 1)} (per server CPU-s; wall)"
        row = _row(name, cpu, "{:.2f}×", "≥ 0.7×", lambda v: v >= 0.7)
        out.append((row[0], f"{row[1]}; wall {wall:.2f}×", *row[2:]))
        added = (ours["itl_p99_us"] - ref["itl_p99_us"]) / 1000
        out.append(
            _row(
                f"Relay added latency per token p99, {level} stream{'s' * (level > 1)}",
                added,
                "{:+.2f} ms",
                "≤ 1 ms",
                lambda v: v <= 1.0,
            )
        )
    rag = r.get("rag", {})
    off = _get(rag, "ttft", "echo", "overhead")
    out.append(
        _row(
            "RAG overhead on TTFT p50, pre-retrieval off",
            off and off["p50_ms"],
            "{:.1f} ms",
            "≤ 40 ms",
            lambda v: v <= 40,
        )
    )
    out.append(
        _row(
            "RAG overhead on TTFT p99, pre-retrieval off",
            off and off["p99_ms"],
            "{:.1f} ms",
            "≤ 120 ms",
            lambda v: v <= 120,
        )
    )
    on = _get(r, "stack", "pre_retrieval", "on")
    out.append(
        _row(
            "RAG overhead share of answer time p50, pre-retrieval on",
            on and 100 * on["share_p50"],
            "{:.1f} %",
            "≤ 10 %",
            lambda v: v <= 10,
        )
    )
    for backend in ("echo", "embedded"):
        s = _get(r, "stack", "streaming", backend)
        if s or backend == "echo":
            name = f"Streamed TTFT / blocking answer time p50 ({backend})"
            out.append(_row(name, s and s["ratio_p50"], "{:.3f}", "≤ 0.2", lambda v: v <= 0.2))
    raw = rag.get("raw_rate")
    for clients in (32, 64):
        lv = _get(rag, "retrieve", "on", clients)
        target = clients == 32
        out.append(
            _row(
                f"Retrieve at {clients} clients vs raw batched embedding rate",
                lv and raw and lv["rate"] / raw,
                "{:.2f}×",
                "≥ 0.7×" if target else "—",
                (lambda v: v >= 0.7) if target else None,
            )
        )
        out.append(
            _row(
                f"Retrieve p99 at {clients} clients",
                lv and lv["p99_ms"],
                "{:.0f} ms",
                "≤ 150 ms" if target else "—",
                (lambda v: v <= 150) if target else None,
            )
        )
    for via in ("llm", "rag"):
        s = _get(r, "stack", "held_streams", via)
        name = f"Concurrent streams held through {'the LLM service' if via == 'llm' else 'RAG AnswerStream'}"
        if not s:
            out.append(_row(name, None, "", "200, no error", lambda v: True))
            continue
        met = s["errors"] == 0 and s["count"] >= 200
        out.append(
            (
                name,
                f"{s['count']} streams, {s['errors']} errors, peak {s['peak_open_streams']} open",
                "200, no error",
                met,
            )
        )
    for kind in ("sse", "openai"):
        g = _get(r, "stack", "gateway", kind, "added_ttft")
        label = "SSE /v1/answer/stream" if kind == "sse" else "OpenAI /v1/chat/completions"
        out.append(
            (
                f"Gateway added TTFT over direct gRPC, {label}",
                f"{g['p50_ms']:.1f} / {g['p99_ms']:.1f} ms (p50 / p99)" if g else "not measured",
                "—",
                None,
            )
        )
    answer = _get(r, "answer", "configs", "default")
    baseline = ANSWER_BASELINE
    out.append(
        _row(
            "Answer key-fact recall, embedded default (vs first version's 0.097)",
            answer and answer["fact_recall"],
            "{:.3f}",
            f"≥ {2 * baseline['fact_recall']:.3f} (2×)",
            lambda v: v >= 2 * baseline["fact_recall"],
        )
    )
    out.append(
        _row(
            "Answers that loop, embedded default", answer and 100 * answer["loops"], "{:.0f} %", "0 %", lambda v: v == 0
        )
    )
    out.append(
        _row(
            "Answer TTFT p50 through the gateway, embedded default",
            answer and answer["ttft_p50"],
            "{:.2f} s",
            "≤ 1.5 s",
            lambda v: v <= 1.5,
        )
    )
    out.append(
        _row(
            '"I don\'t know" on unanswerable questions, embedded default',
            answer and 100 * answer["idk"],
            "{:.0f} %",
            "—",
            None,
        )
    )
    return out


# The first version's default on the same questions (docs/evaluation.md, "Answer quality": before).
ANSWER_BASELINE = {"fact_recall": 0.097, "loops": 0.56, "ttft_p50": 2.68}


def table(r: dict[str, Any]) -> str:
    """The Markdown targets table."""
    lines = ["| Figure | Measured | Target | Met |", "|---|---:|---:|:---:|"]
    for name, value, target, met in rows(r):
        lines.append(f"| {name} | {value} | {target} | {'—' if met is None else ('met' if met else '**not met**')} |")
    return "\n".join(lines)


def details(r: dict[str, Any]) -> str:
    """Per-level and per-step tables below the targets."""
    md: list[str] = []
    answer = r.get("answer", {})
    if answer.get("configs"):
        import answer_eval

        md += [
            f"### Answer quality ({answer['questions']} questions via {answer['via']}, seed {answer['seed']})",
            "",
            answer_eval.table(answer["configs"]),
            "",
            'Measures: docs/evaluation.md, "Answer quality".',
            "",
        ]
    llm = r.get("llm", {})
    if llm.get("echo"):
        md += [
            "### LLM relay (echo backend vs bare grpc.aio loop)",
            "",
            "| streams | tokens/s ours / bare | per server CPU-s ours / bare | ITL p50 ours / bare (µs) | ITL p99 ours / bare (µs) |",  # noqa: E501
            "|---:|---:|---:|---:|---:|",
        ]
        for level, ours in llm["echo"].items():
            ref = _get(llm, "reference", level) or {}
            md.append(
                f"| {level} | {ours['tok_s']:,.0f} / {ref.get('tok_s', 0):,.0f} | {ours['tok_per_cpu_s']:,.0f} / "
                f"{ref.get('tok_per_cpu_s', 0):,.0f} | {ours['itl_p50_us']:.0f} / {ref.get('itl_p50_us', 0):.0f} | "
                f"{ours['itl_p99_us']:.0f} / {ref.get('itl_p99_us', 0):.0f} |"
            )
        md.append("")
    rag = r.get("rag", {})
    if rag.get("retrieve"):
        md += [
            f"### Retrieve (raw batched embedding rate {rag['raw_rate']:.0f} queries/s, same run)",
            "",
            "| batching | clients | q/s | vs raw | p50 ms | p99 ms | errors |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for mode, levels in rag["retrieve"].items():
            for c, lv in levels.items():
                md.append(
                    f"| {mode} | {c} | {lv['rate']:.1f} | {lv['rate'] / rag['raw_rate']:.2f}× | "
                    f"{lv['p50_ms']:.1f} | {lv['p99_ms']:.1f} | {lv['errors']} |"
                )
        md.append("")
    steps_md = []
    for name, t in (rag.get("ttft") or {}).items():
        steps = ", ".join(f"{k} {v['p50_ms']:.1f}/{v['p99_ms']:.1f}" for k, v in t["steps"].items())
        steps_md.append(
            f"| rag_bench, {name} LLM, pre-retrieval off | {t['overhead']['p50_ms']:.1f} / "
            f"{t['overhead']['p99_ms']:.1f} | — | {steps} |"
        )
    for mode, p in (_get(r, "stack", "pre_retrieval") or {}).items():
        steps = ", ".join(f"{k} {v['p50_ms']:.1f}/{v['p99_ms']:.1f}" for k, v in p["steps"].items())
        steps_md.append(
            f"| stack_bench, echo {r['stack']['token_delay_ms']:g} ms/token, pre-retrieval {mode} | "
            f"{p['overhead']['p50_ms']:.1f} / {p['overhead']['p99_ms']:.1f} | "
            f"{100 * p['share_p50']:.1f} % | {steps} |"
        )
    if steps_md:
        md += [
            "### RAG overhead per step (ms, p50/p99)",
            "",
            "| run | overhead on TTFT p50 / p99 | share of answer time p50 | steps |",
            "|---|---:|---:|---|",
            *steps_md,
            "",
        ]
    if _get(r, "stack", "streaming"):
        md += [
            "### Streaming vs blocking (same question set, pre-retrieval off)",
            "",
            "| LLM | tokens | AnswerStream TTFT p50 / p99 | AnswerStream total p50 "
            "| Answer (blocking) p50 / p99 | ratio |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for backend, s in r["stack"]["streaming"].items():
            md.append(
                f"| {backend} | {s['tokens']} | {s['stream_ttft']['p50_ms']:.0f} / "
                f"{s['stream_ttft']['p99_ms']:.0f} ms | "
                f"{s['stream_total']['p50_ms']:.0f} ms | {s['blocking_total']['p50_ms']:.0f} / "
                f"{s['blocking_total']['p99_ms']:.0f} ms | {s['ratio_p50']:.3f} |"
            )
        md.append("")
    if _get(r, "stack", "gateway"):
        md += [
            "### Gateway vs direct gRPC (AnswerStream, same questions)",
            "",
            "| path | TTFT p50 / p99 ms | total p50 / p99 ms |",
            "|---|---:|---:|",
        ]
        for path, g in r["stack"]["gateway"].items():
            md.append(
                f"| {path} | {g['ttft']['p50_ms']:.1f} / {g['ttft']['p99_ms']:.1f} | "
                f"{g['total']['p50_ms']:.1f} / {g['total']['p99_ms']:.1f} |"
            )
        md.append("")
    for via, s in (_get(r, "stack", "held_streams") or {}).items():
        md += [
            f"### {s['concurrency']} concurrent streams via {via} (bench/loadgen.py)",
            "",
            "```",
            *__import__("loadgen").render(s).strip().splitlines(),
            "```",
            "",
        ]
    return "\n".join(md)


def plots(r: dict[str, Any], out: Path) -> list[str]:
    """PNG plots; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    llm = r.get("llm", {})
    if llm.get("echo") and llm.get("reference"):
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        for name, label in (("reference", "bare grpc.aio loop"), ("echo", "LLM service relay (echo)")):
            levels = sorted(int(k) for k in llm[name])
            a1.plot(levels, [_get(llm, name, k)["tok_s"] for k in levels], marker="o", label=label)
            a2.plot(levels, [_get(llm, name, k)["tok_per_cpu_s"] for k in levels], marker="o", label=label)
        a1.set(xscale="log", xlabel="concurrent streams", ylabel="messages/s", title="Relay msgs/s (wall clock)")
        a2.set(
            xscale="log",
            xlabel="concurrent streams",
            ylabel="messages per server CPU-second",
            title="Relay msgs per server CPU-second",
        )
        for a in (a1, a2):
            a.set_xticks(levels, [str(x) for x in levels])
            a.set_ylim(bottom=0)
            a.legend(fontsize=8)
            a.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "relay.png", dpi=100)
        made.append("relay.png")
    rag = r.get("rag", {})
    if rag.get("retrieve"):
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        for mode, levels_ in rag["retrieve"].items():
            cs = sorted(int(c) for c in levels_)
            a1.plot(cs, [_get(levels_, c)["rate"] for c in cs], marker="o", label=f"batching {mode}")
            a2.plot(cs, [_get(levels_, c)["p99_ms"] for c in cs], marker="o", label=f"batching {mode}")
        a1.axhline(rag["raw_rate"], ls="--", c="grey", label="raw batched embedding")
        a1.axhline(0.7 * rag["raw_rate"], ls=":", c="grey", label="target 0.7× raw")
        a2.axhline(150, ls=":", c="red", label="target p99 at 32")
        a1.set(xscale="log", xlabel="concurrent clients", ylabel="Retrieve/s", title="Retrieve throughput")
        a2.set(xscale="log", xlabel="concurrent clients", ylabel="p99 ms", title="Retrieve p99 latency")
        for a in (a1, a2):
            a.set_xticks(cs, [str(c) for c in cs])
            a.legend(fontsize=8)
            a.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "retrieve.png", dpi=100)
        made.append("retrieve.png")
    streaming = _get(r, "stack", "streaming")
    if streaming:
        fig, ax = plt.subplots(figsize=(6, 4))
        names = list(streaming)
        xs = range(len(names))
        ttft = [streaming[n]["stream_ttft"]["p50_ms"] for n in names]
        block = [streaming[n]["blocking_total"]["p50_ms"] for n in names]
        ax.bar([x - 0.2 for x in xs], ttft, 0.4, label="AnswerStream: first token")
        ax.bar([x + 0.2 for x in xs], block, 0.4, label="Answer (blocking): whole answer")
        ax.set_xticks(list(xs), [f"{n} LLM" for n in names])
        ax.set(ylabel="ms (p50)", title="What the user waits: streamed vs blocking")
        ax.legend()
        ax.grid(alpha=0.3, axis="y")
        fig.tight_layout()
        fig.savefig(out / "streaming.png", dpi=100)
        made.append("streaming.png")
    plt.close("all")
    return made


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
