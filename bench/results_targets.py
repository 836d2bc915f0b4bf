"""The targets table of docs/bench/results.md (issue 8 §2): each figure of a `make bench` run, its target,
and whether it was met."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def lookup(data: dict[str, Any], *path: Any) -> Any:
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
        ours, ref = lookup(llm, "echo", level), lookup(llm, "reference", level)
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
    off = lookup(rag, "ttft", "echo", "overhead")
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
    on = lookup(r, "stack", "pre_retrieval", "on")
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
        s = lookup(r, "stack", "streaming", backend)
        if s or backend == "echo":
            name = f"Streamed TTFT / blocking answer time p50 ({backend})"
            out.append(_row(name, s and s["ratio_p50"], "{:.3f}", "≤ 0.2", lambda v: v <= 0.2))
    raw = rag.get("raw_rate")
    for clients in (32, 64):
        lv = lookup(rag, "retrieve", "on", clients)
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
        s = lookup(r, "stack", "held_streams", via)
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
        g = lookup(r, "stack", "gateway", kind, "added_ttft")
        label = "SSE /v1/answer/stream" if kind == "sse" else "OpenAI /v1/chat/completions"
        out.append(
            (
                f"Gateway added TTFT over direct gRPC, {label}",
                f"{g['p50_ms']:.1f} / {g['p99_ms']:.1f} ms (p50 / p99)" if g else "not measured",
                "—",
                None,
            )
        )
    answer = lookup(r, "answer", "configs", "default")
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
