"""The plots of docs/bench/: relay msgs/s vs streams, Retrieve rate and p99 vs clients, TTFT vs blocking answer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from results_targets import lookup


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
            a1.plot(levels, [lookup(llm, name, k)["tok_s"] for k in levels], marker="o", label=label)
            a2.plot(levels, [lookup(llm, name, k)["tok_per_cpu_s"] for k in levels], marker="o", label=label)
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
            a1.plot(cs, [lookup(levels_, c)["rate"] for c in cs], marker="o", label=f"batching {mode}")
            a2.plot(cs, [lookup(levels_, c)["p99_ms"] for c in cs], marker="o", label=f"batching {mode}")
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
    streaming = lookup(r, "stack", "streaming")
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
