"""Prompt traces: recorded cheaply in the request path, exported to Opik by the real SDK off it.

Opik here is a loopback FakeOpik speaking Opik's REST routes; the SDK's client is pointed at it explicitly
(OpikSettings), and its process-wide knobs come from its own env vars.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime

import pytest

from rag_service.opik_export import OpikTracer, make_tracer
from rag_service.opik_sdk import OpikSettings
from rag_service.tracing import NoopTracer, TraceRecorder, tick
from tests.support.fake_opik import FakeOpik, running_fake_opik

SetOpikEnv = Callable[[str], OpikSettings]


@pytest.fixture(scope="module", autouse=True)
def opik_sdk_imported() -> Iterator[None]:
    """Import the SDK once, with telemetry off, so its ~1 s import does not land inside a timed test."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPIK_SENTRY_ENABLE", "false")
        mp.setenv("OPIK_ANALYTICS_ENABLE", "false")
        import opik  # noqa: F401

        yield


@pytest.fixture
def opik_env(monkeypatch: pytest.MonkeyPatch) -> SetOpikEnv:
    """Configure the SDK, through its own environment variables, to talk to the given base URL; returns the
    client settings ``make_tracer`` reads from them."""

    def configure(url: str) -> OpikSettings:
        monkeypatch.setenv("OPIK_URL_OVERRIDE", url)
        monkeypatch.setenv("OPIK_WORKSPACE", "default")
        monkeypatch.setenv("OPIK_API_KEY", "test-key")
        monkeypatch.setenv("OPIK_PROJECT_NAME", "rag-tests")
        monkeypatch.setenv("OPIK_SENTRY_ENABLE", "false")
        monkeypatch.setenv("OPIK_ANALYTICS_ENABLE", "false")
        monkeypatch.setenv("OPIK_BACKGROUND_WORKERS", "1")
        monkeypatch.setenv("OPIK_DEFAULT_FLUSH_TIMEOUT", "1")
        monkeypatch.delenv("OPIK_TRACK_DISABLE", raising=False)  # the suite's conftest turns tracing off
        return OpikSettings.from_env(os.environ)

    return configure


@pytest.fixture
def fake_opik() -> Iterator[FakeOpik]:
    """A healthy FakeOpik."""
    with running_fake_opik() as fake:
        yield fake


def closed_port_url() -> str:
    """An Opik base URL on a loopback port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/api"


def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    """Poll a condition until it holds or the time is up."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def accounted(tracer: OpikTracer) -> int:
    """Traces the tracer has settled: sent, failed or dropped."""
    stats = tracer.stats()
    return stats["sent"] + stats["failed"] + stats["dropped"]


def recorded_answer(request_id: str = "req-1") -> TraceRecorder:
    """A trace shaped like one RAG answer, recorded as the pipeline records it."""
    rec = TraceRecorder(request_id, "what is RAG?", {"embedding_model": "all-MiniLM-L6-v2", "llm_model": "smol"})
    t0 = tick()
    queries = ["what is RAG?", "explain retrieval augmented generation"]
    rec.add_span("expand", t0, tick(), {"query": "what is RAG?"}, {"queries": queries})
    t0 = tick()
    rec.add_span("search:article:0", t0, t0 + 0.004, output={"hits": 3, "top_scores": [0.9, 0.8]})
    t0 = tick()
    rerank = rec.add_span(
        "rerank", t0, tick(), {"candidates": 6}, {"kept": [{"id": "c1", "score": 0.9}]}, {"reranker": "cosine"}
    )
    rec.add_span("score", t0, tick(), output={"n": 6}, parent=rerank)
    t1 = tick()
    rec.add_span(
        "generate",
        t1,
        t1 + 0.2,
        input={"prompt": "You are ..."},
        output={"answer": "RAG is ..."},
        metadata={"ttft_s": 0.05},
        usage={"prompt_tokens": 40, "completion_tokens": 12, "total_tokens": 52},
        model="smol",
    )
    rec.set_output("RAG is ...", {"prompt_template_version": "v1"})
    return rec


# --- the recorder (no I/O) ---------------------------------------------------------------------------------


def test_recorder_owns_a_uuid_v7_trace_id_and_records_the_answer() -> None:
    rec = recorded_answer()
    record = rec.finish()

    assert uuid.UUID(rec.trace_id).version == 7
    assert record.trace_id == rec.trace_id
    assert record.input == {"query": "what is RAG?"}
    assert record.output == {"answer": "RAG is ..."}
    assert record.metadata["request_id"] == "req-1"
    assert record.metadata["prompt_template_version"] == "v1"
    assert [s.name for s in record.spans] == ["expand", "search:article:0", "rerank", "score", "generate"]
    assert all(uuid.UUID(s.span_id).version == 7 for s in record.spans)


def test_explicit_spans_keep_their_measured_times_and_llm_type() -> None:
    rec = TraceRecorder("r", "q")
    t0 = tick()
    rec.add_span("generate", t0, t0 + 0.25, model="smol", usage={"prompt_tokens": 1})
    rec.add_span("search:post:1", t0 + 0.1, t0 + 0.15)
    generate, search = rec.finish().spans

    assert generate.type == "llm"
    assert search.type == "general"
    assert (generate.end - generate.start).total_seconds() == pytest.approx(0.25, abs=1e-6)
    assert (search.start - generate.start).total_seconds() == pytest.approx(0.1, abs=1e-6)
    assert (search.end - search.start).total_seconds() == pytest.approx(0.05, abs=1e-6)


def test_a_failed_step_records_its_error_on_the_span() -> None:
    rec = TraceRecorder("r", "q")
    t0 = tick()
    rec.add_span("expand", t0, tick(), error=RuntimeError("store down"))
    rec.add_span("self_query", t0, tick(), error="cancelled")
    expand, self_query = rec.finish().spans

    assert expand.error is not None
    assert expand.error["exception_type"] == "RuntimeError"
    assert expand.error["message"] == "store down"
    assert self_query.error == {"exception_type": "Error", "message": "cancelled", "traceback": ""}


def test_unsampled_recorder_records_nothing_and_finish_freezes_the_trace() -> None:
    unsampled = TraceRecorder("r", "q", sampled=False)
    t0 = tick()
    unsampled.add_span("expand", t0, tick())
    assert unsampled.finish().spans == ()

    rec = TraceRecorder("r", "q")
    first = rec.finish()
    rec.add_span("late", 0.0, 1.0)
    assert rec.finish() is first
    assert first.spans == ()


# --- export to Opik through the real SDK --------------------------------------------------------------------


def test_submitted_trace_arrives_in_opik_with_its_spans(fake_opik: FakeOpik, opik_env: SetOpikEnv) -> None:
    settings = opik_env(fake_opik.url)
    tracer = OpikTracer(settings, sample_rate=1.0, flush_timeout_s=2.0)
    rec = recorded_answer()
    tracer.submit(rec)

    assert fake_opik.wait_for(traces=1, spans=5)
    tracer.close()
    (trace,) = fake_opik.traces
    spans = {s["name"]: s for s in fake_opik.spans}

    assert trace["id"] == rec.trace_id
    assert trace["project_name"] == "rag-tests"
    assert trace["input"] == {"query": "what is RAG?"}
    assert trace["output"] == {"answer": "RAG is ..."}
    assert trace["metadata"]["request_id"] == "req-1"
    assert trace["metadata"]["llm_model"] == "smol"
    assert set(spans) == {"expand", "search:article:0", "rerank", "score", "generate"}
    assert {s["trace_id"] for s in spans.values()} == {rec.trace_id}
    assert spans["score"]["parent_span_id"] == spans["rerank"]["id"]
    assert spans["rerank"].get("parent_span_id") is None
    assert spans["expand"]["output"] == {"queries": ["what is RAG?", "explain retrieval augmented generation"]}
    assert spans["rerank"]["metadata"] == {"reranker": "cosine"}
    generate = spans["generate"]
    assert generate["type"] == "llm"
    assert generate["model"] == "smol"
    assert generate["metadata"]["ttft_s"] == 0.05
    assert {k: generate["usage"][k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")} == {
        "prompt_tokens": 40,
        "completion_tokens": 12,
        "total_tokens": 52,
    }
    start = datetime.fromisoformat(generate["start_time"])
    end = datetime.fromisoformat(generate["end_time"])
    assert (end - start).total_seconds() == pytest.approx(0.2, abs=1e-3)
    assert tracer.stats() == {"sent": 1, "dropped": 0, "failed": 0, "queued": 0}
    assert fake_opik.unknown == []


def test_the_conversation_id_is_the_opik_thread(fake_opik: FakeOpik, opik_env: SetOpikEnv) -> None:
    tracer = OpikTracer(opik_env(fake_opik.url), sample_rate=1.0, flush_timeout_s=2.0)
    rec = tracer.start_trace("req-1", "and why?", {"conversation_id": "conv-42"}, thread_id="conv-42")
    rec.annotate({"standalone_query": "and why? (KV cache)"})
    rec.set_output("because")
    tracer.submit(rec)
    alone = tracer.start_trace("req-2", "what is RAG?")
    alone.set_output("RAG is ...")
    tracer.submit(alone)

    assert fake_opik.wait_for(traces=2)
    tracer.close()
    assert set(fake_opik.thread_ids) == {"conv-42", None}
    (trace,) = [t for t in fake_opik.traces if t.get("thread_id")]
    assert trace["metadata"]["standalone_query"] == "and why? (KV cache)"
    assert trace["metadata"]["conversation_id"] == "conv-42"


def test_sample_rate_zero_sends_nothing_and_one_sends_everything(fake_opik: FakeOpik, opik_env: SetOpikEnv) -> None:
    settings = opik_env(fake_opik.url)
    never = OpikTracer(replace(settings, project_name="never"), sample_rate=0.0, flush_timeout_s=2.0)
    always = OpikTracer(replace(settings, project_name="always"), sample_rate=1.0, flush_timeout_s=2.0)
    for i in range(5):
        for tracer in (never, always):
            rec = tracer.start_trace(f"req-{i}", "q")
            t0 = tick()
            rec.add_span("expand", t0, tick())
            rec.set_output("a")
            tracer.submit(rec)

    assert fake_opik.wait_for(traces=5, spans=5)
    never.close()
    always.close()
    assert {t["project_name"] for t in fake_opik.traces} == {"always"}
    assert len(fake_opik.traces) == 5
    assert (never.stats()["sent"], always.stats()["sent"]) == (0, 5)


def test_slow_opik_never_blocks_submit_and_a_burst_beyond_the_buffer_is_dropped(opik_env: SetOpikEnv) -> None:
    with running_fake_opik(delay_s=5.0) as slow:
        tracer = OpikTracer(opik_env(slow.url), sample_rate=1.0, buffer_size=5, flush_timeout_s=0.5)
        tracer.submit(recorded_answer("first"))
        # From here the export thread waits on Opik's slow answer: the burst below races only that wait.
        assert slow.wait_for_request("/batch")
        burst = [recorded_answer(f"req-{i}") for i in range(49)]
        took = []
        for rec in burst:
            t0 = time.perf_counter()
            tracer.submit(rec)
            took.append(time.perf_counter() - t0)

        assert max(took) < 0.05, f"slowest submit {max(took) * 1e3:.2f} ms"  # a GIL switch, never I/O
        assert statistics.median(took) < 0.001
        assert tracer.stats()["dropped"] >= 49 - 5  # all but what the buffer holds
        t0 = time.perf_counter()
        tracer.close()
        assert time.perf_counter() - t0 < 2.0  # bounded: the SDK's own timeouts are 20 s and more
        assert wait_until(lambda: accounted(tracer) == 50, 2.0), tracer.stats()
        assert tracer.stats()["sent"] == 0


def test_opik_down_submit_never_blocks_failures_are_counted_and_close_is_bounded(
    opik_env: SetOpikEnv,
) -> None:
    tracer = OpikTracer(opik_env(closed_port_url()), sample_rate=1.0, buffer_size=4, flush_timeout_s=0.5)
    tracer.submit(recorded_answer("first"))
    assert wait_until(lambda: tracer.stats()["failed"] >= 1, 3.0), tracer.stats()

    took = []
    for i in range(30):
        t0 = time.perf_counter()
        tracer.submit(recorded_answer(f"req-{i}"))
        took.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    tracer.close()
    closed_in = time.perf_counter() - t0

    assert max(took) < 0.05, f"slowest submit {max(took) * 1e3:.2f} ms"  # a GIL switch, never I/O
    assert closed_in < 2.0  # bounded: the SDK's own timeouts are 20 s and more
    assert tracer.stats()["dropped"] >= 30 - 4 - 1
    assert tracer.stats()["sent"] == 0
    tracer.submit(recorded_answer("after-close"))  # neither raises nor blocks once closed
    assert wait_until(lambda: accounted(tracer) == 32, 2.0), tracer.stats()


async def test_close_off_the_event_loop_flushes_what_is_queued(fake_opik: FakeOpik, opik_env: SetOpikEnv) -> None:
    # A generous bound: on a loaded CI machine the SDK's first connection alone can take seconds.
    tracer = OpikTracer(opik_env(fake_opik.url), sample_rate=1.0, flush_timeout_s=10.0)
    tracer.submit(recorded_answer())
    await asyncio.to_thread(tracer.close)  # as the server stops it

    assert tracer.stats()["sent"] == 1
    assert len(fake_opik.traces) == 1


# --- choosing a tracer -----------------------------------------------------------------------------------------


def test_make_tracer_is_a_noop_unless_opik_is_configured_and_enabled(
    monkeypatch: pytest.MonkeyPatch, fake_opik: FakeOpik, opik_env: SetOpikEnv
) -> None:
    monkeypatch.delenv("OPIK_URL_OVERRIDE", raising=False)
    monkeypatch.delenv("OPIK_API_KEY", raising=False)
    unconfigured = make_tracer(enabled=True, sample_rate=1.0, project_name=None, buffer_size=10)
    assert isinstance(unconfigured, NoopTracer)
    assert unconfigured.should_sample() is False
    rec = unconfigured.start_trace("r", "q")
    unconfigured.submit(rec)
    unconfigured.close()

    opik_env(fake_opik.url)
    assert isinstance(make_tracer(enabled=False, sample_rate=1.0, project_name=None, buffer_size=10), NoopTracer)
    assert isinstance(make_tracer(enabled=True, sample_rate=0.0, project_name=None, buffer_size=10), NoopTracer)
    monkeypatch.setenv("OPIK_TRACK_DISABLE", "true")
    assert isinstance(make_tracer(enabled=True, sample_rate=1.0, project_name=None, buffer_size=10), NoopTracer)
    assert fake_opik.requests == []


def test_make_tracer_builds_an_opik_tracer_with_quiet_sdk_defaults(
    monkeypatch: pytest.MonkeyPatch, fake_opik: FakeOpik, opik_env: SetOpikEnv
) -> None:
    opik_env(fake_opik.url)
    for name in ("OPIK_SENTRY_ENABLE", "OPIK_ANALYTICS_ENABLE", "OPIK_BACKGROUND_WORKERS"):
        monkeypatch.delenv(name)  # recorded by the earlier setenv, so restored after the test
    tracer = make_tracer(enabled=True, sample_rate=0.5, project_name="rag-tests", buffer_size=10)
    try:
        assert isinstance(tracer, OpikTracer)
        assert (tracer.sample_rate, tracer.buffer_size) == (0.5, 10)
        assert tracer.settings == OpikSettings(fake_opik.url, "test-key", "default", "rag-tests")
        assert os.environ["OPIK_SENTRY_ENABLE"] == "false"
        assert os.environ["OPIK_ANALYTICS_ENABLE"] == "false"
        assert os.environ["OPIK_BACKGROUND_WORKERS"] == "1"
    finally:
        tracer.close()
