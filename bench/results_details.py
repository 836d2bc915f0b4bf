"""The detail tables of docs/bench/results.md, below the targets: per level, per step, per path."""

from __future__ import annotations

from typing import Any

from results_targets import lookup


def details(r: dict[str, Any]) -> str:
    """Per-level and per-step tables below the targets."""
    import answer_eval  # loaded on use: they load grpc and the project, importing run_all stays light
    import loadgen

    md: list[str] = []
    answer = r.get("answer", {})
    if answer.get("configs"):
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
            ref = lookup(llm, "reference", level) or {}
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
    for mode, p in (lookup(r, "stack", "pre_retrieval") or {}).items():
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
    if lookup(r, "stack", "streaming"):
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
    if lookup(r, "stack", "gateway"):
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
    for via, s in (lookup(r, "stack", "held_streams") or {}).items():
        md += [
            f"### {s['concurrency']} concurrent streams via {via} (bench/loadgen.py)",
            "",
            "```",
            *loadgen.render(s).strip().splitlines(),
            "```",
            "",
        ]
    return "\n".join(md)
