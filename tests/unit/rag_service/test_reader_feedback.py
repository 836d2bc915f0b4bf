"""Reader feedback: the rules a rating must meet (rag_service.feedback), and its export as an Opik feedback score by
the tracer's queue (the real SDK against a loopback FakeOpik)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from llmtwin.rag.v1 import rag_service_pb2 as pb
from rag_service.errors import InvalidArgument
from rag_service.feedback import MAX_COMMENT_CHARS, SCORE_NAME, Feedback, Rating, make_feedback
from rag_service.opik_export import OpikTracer
from rag_service.opik_sdk import OpikSettings
from rag_service.tracing import NoopTracer, TraceRecorder
from tests.support.fake_opik import running_fake_opik

UUID = "01A22FD0-ABC6-7F74-A84A-6FE88A32AF56"


@pytest.fixture(autouse=True)
def opik_sdk_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The SDK on (the suite turns it off), quiet, with a short flush at exit."""
    monkeypatch.setenv("OPIK_SENTRY_ENABLE", "false")
    monkeypatch.setenv("OPIK_ANALYTICS_ENABLE", "false")
    monkeypatch.setenv("OPIK_DEFAULT_FLUSH_TIMEOUT", "1")
    monkeypatch.delenv("OPIK_TRACK_DISABLE", raising=False)
    yield


def test_ratings_are_the_contracts_and_score_one_and_zero() -> None:
    assert (Rating.UP.value, Rating.DOWN.value) == (pb.FEEDBACK_RATING_UP, pb.FEEDBACK_RATING_DOWN)
    assert (Rating.UP.score, Rating.DOWN.score) == (1.0, 0.0)


def test_a_valid_rating_is_normalised() -> None:
    up = make_feedback(UUID, pb.FEEDBACK_RATING_UP, "  right on  ")
    assert up == Feedback(trace_id=UUID.lower(), rating=Rating.UP, comment="right on")
    assert (up.name, up.value, up.reason) == (SCORE_NAME, 1.0, "right on")
    down = make_feedback(UUID.lower(), pb.FEEDBACK_RATING_DOWN, "   ")
    assert (down.value, down.reason) == (0.0, None)
    assert make_feedback(UUID, pb.FEEDBACK_RATING_UP, "é" * MAX_COMMENT_CHARS).comment == "é" * MAX_COMMENT_CHARS


@pytest.mark.parametrize(
    ("trace_id", "rating", "comment", "fields"),
    [
        ("", 1, "", ["trace_id"]),
        ("not-a-uuid", 1, "", ["trace_id"]),
        (UUID.replace("-", ""), 1, "", ["trace_id"]),
        (f"{{{UUID}}}", 1, "", ["trace_id"]),
        (f"urn:uuid:{UUID}", 1, "", ["trace_id"]),
        (f"{UUID} ", 1, "", ["trace_id"]),
        (UUID, 0, "", ["rating"]),
        (UUID, 3, "", ["rating"]),
        (UUID, -1, "", ["rating"]),
        (UUID, 1, "x" * (MAX_COMMENT_CHARS + 1), ["comment"]),
        (UUID, 1, " " * (MAX_COMMENT_CHARS + 1), ["comment"]),  # counted before stripping, as the schema counts
        ("x", 0, "x" * 5000, ["trace_id", "rating", "comment"]),
    ],
)
def test_a_bad_rating_names_each_field(trace_id: str, rating: int, comment: str, fields: list[str]) -> None:
    with pytest.raises(InvalidArgument) as caught:
        make_feedback(trace_id, rating, comment)
    assert [field for field, _ in caught.value.violations] == fields


def test_a_trace_and_its_rating_queued_together_reach_opik_trace_first() -> None:
    with running_fake_opik() as opik:
        settings = OpikSettings(host=opik.url, api_key="k", workspace="default", project_name="feedback-unit")
        tracer = OpikTracer(settings, sample_rate=1.0, flush_timeout_s=10.0)
        rec = TraceRecorder("req-1", "what is RAG?")
        rec.set_output("RAG is ...")
        tracer.submit(rec)
        tracer.submit_feedback(make_feedback(rec.trace_id, pb.FEEDBACK_RATING_DOWN, "vague"))
        tracer.close()

    assert tracer.stats()["sent"] == 1
    assert tracer.feedback_stats() == {"sent": 1, "dropped": 0, "failed": 0}
    routes = [path for method, path in opik.requests if method != "GET"]
    assert routes == ["/api/v1/private/traces/batch", "/api/v1/private/traces/feedback-scores"]
    (score,) = opik.feedback_scores
    assert (score["id"], score["name"], score["value"], score["reason"]) == (rec.trace_id, SCORE_NAME, 0.0, "vague")
    assert score["project_name"] == "feedback-unit"


def test_a_rating_after_close_or_with_tracing_off_is_dropped_and_counted() -> None:
    with running_fake_opik() as opik:
        settings = OpikSettings(host=opik.url, api_key="k", workspace="default", project_name="feedback-unit")
        tracer = OpikTracer(settings, sample_rate=1.0, flush_timeout_s=1.0)
        tracer.close()
        tracer.submit_feedback(make_feedback(UUID, pb.FEEDBACK_RATING_UP, ""))  # neither raises nor blocks
    assert tracer.feedback_stats() == {"sent": 0, "dropped": 1, "failed": 0}
    assert opik.feedback_scores == []
    NoopTracer().submit_feedback(make_feedback(UUID, pb.FEEDBACK_RATING_UP, ""))  # neither raises nor blocks
