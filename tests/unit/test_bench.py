"""The benchmark runner (bench/run_all.py): its quick mode's flags parse, and its targets table judges right."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import loadgen  # noqa: E402
import run_all  # noqa: E402


def _results(relay_cpu_ratio: float, retrieve_p99_ms: float, errors: int) -> dict[str, object]:
    level = {"tok_s": 1000.0, "tok_per_cpu_s": 1000.0, "itl_p50_us": 100.0, "itl_p99_us": 300.0}
    ours = level | {"tok_per_cpu_s": 1000.0 * relay_cpu_ratio, "itl_p99_us": 800.0}
    retrieve = {"clients": 32, "requests": 100, "errors": 0, "rate": 80.0, "p50_ms": 50.0, "p99_ms": retrieve_p99_ms}
    held = loadgen.Report("llm.GenerateStream", 200, count=200, total_s=2.0, latencies=[1.0] * 200)
    held.first_message, held.peak_open_streams = [0.01] * 200, 200
    held.statuses.update({"OK": 200 - errors, "UNAVAILABLE": errors})
    return {
        "llm": {"reference": {"1": level}, "echo": {"1": ours}},  # JSON keys, as results.json holds them
        "rag": {
            "raw_rate": 100.0,
            "retrieve": {"on": {32: retrieve}},
            "ttft": {"echo": {"overhead": {"p50_ms": 20.0, "p99_ms": 30.0}, "steps": {}}},
        },
        "stack": {"held_streams": {"llm": held.summary()}},
    }


def test_quick_mode_flags_parse_with_each_suite() -> None:
    """Every suite accepts the runner's quick flags (no benchmark is run)."""
    import answer_eval
    import llm_bench
    import rag_bench
    import stack_bench

    suites = {"llm": llm_bench, "rag": rag_bench, "stack": stack_bench, "answer": answer_eval}
    for name, module in suites.items():
        for mode in run_all.MODES.values():
            module.build_parser().parse_args(mode[name])


def test_table_marks_met_and_not_met() -> None:
    """Figures over their target read 'met', others 'not met'; missing suites read 'not measured'."""
    good = {name: met for name, _, _, met in run_all.rows(_results(0.9, 120.0, 0))}
    assert good["Relay added latency per token p99, 1 stream"] is True
    assert good["RAG overhead on TTFT p50, pre-retrieval off"] is True
    assert good["Retrieve p99 at 32 clients"] is True
    assert good["Retrieve at 32 clients vs raw batched embedding rate"] is True
    assert good["Concurrent streams held through the LLM service"] is True
    assert good["Concurrent streams held through RAG AnswerStream"] is False  # not measured
    bad = {name: met for name, _, _, met in run_all.rows(_results(0.5, 400.0, 3))}
    assert bad["Retrieve p99 at 32 clients"] is False
    assert bad["Concurrent streams held through the LLM service"] is False
    assert any(met is False and "Relay msgs/s" in name for name, met in bad.items())
    table = run_all.table(_results(0.5, 400.0, 3))
    assert "**not met**" in table and "| met |" in table and "not measured" in table


def test_loadgen_summary_renders_like_ghz() -> None:
    """The summary has ghz's sections and the time to first message."""
    report = loadgen.Report("rag.AnswerStream", 2, count=3, total_s=1.5, latencies=[0.1, 0.2, 0.3])
    report.first_message, report.messages = [0.01, 0.02, 0.03], 30
    report.statuses.update({"OK": 3})
    text = loadgen.render(report.summary())
    for part in ("Requests/sec:\t2.00", "Latency distribution:", "99 % in 300.00 ms", "[OK]\t3 responses"):
        assert part in text
    assert "Time to first message" in text
