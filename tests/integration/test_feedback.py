"""Reader feedback end to end: an answer's trace reaches a loopback Opik, a rating sent by gRPC or through the gateway
becomes a feedback score on that trace; bad ratings are refused naming the field; Opik down or tracing off never
fails a rating, and what was not sent is counted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import grpc
import httpx
import pytest
from prometheus_client import REGISTRY

from llm_service.backends.echo import EchoBackend
from llmtwin.llm.v1 import llm_service_pb2 as llm_pb
from llmtwin.rag.v1 import rag_service_pb2 as pb
from rag_service.opik_export import OpikTracer
from rag_service.opik_sdk import OpikSettings
from servekit.errors import error_reason, field_violations
from tests.support.fake_opik import running_fake_opik
from tests.support.gateway import serving_gateway
from tests.support.llm import running_llm
from tests.support.procs import free_port
from tests.support.rag import corpus, running_rag

pytestmark = pytest.mark.asyncio(loop_scope="session")

DOCS = corpus(limit=3)
QUESTION = pb.AnswerRequest(query="What is a KV cache?", parameters=llm_pb.GenerationParameters(max_new_tokens=8))
UUID = "01a22fd0-abc6-7f74-a84a-6fe88a32af56"


@pytest.fixture(autouse=True)
def opik_sdk_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK on (the suite turns it off) with a short flush at exit."""
    monkeypatch.setenv("OPIK_DEFAULT_FLUSH_TIMEOUT", "1")
    monkeypatch.delenv("OPIK_TRACK_DISABLE", raising=False)


def scores_counted(outcome: str) -> float:
    """rag_feedback_scores_total{outcome} so far."""
    return REGISTRY.get_sample_value("rag_feedback_scores_total", {"outcome": outcome}) or 0.0


async def wait_until(condition: Callable[[], bool], timeout_s: float = 20.0) -> bool:
    """Poll a condition until it holds or the (generous) time is up."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def test_a_rating_by_grpc_and_one_through_the_gateway_become_scores_on_the_answers_trace(embedder) -> None:
    sent_before = scores_counted("sent")
    with running_fake_opik() as opik:
        settings = OpikSettings(host=opik.url, api_key="test-key", workspace="default", project_name="feedback")
        tracer = OpikTracer(settings, sample_rate=1.0, flush_timeout_s=5.0)
        async with running_llm(EchoBackend()) as llm, running_rag(llm.target, embedder, tracer=tracer) as rag:
            await rag.ingest(DOCS)
            trace_id = (await rag.stub.Answer(QUESTION, timeout=30)).final.trace_id
            assert await asyncio.to_thread(opik.wait_for, traces=1, timeout_s=20)

            response = await rag.stub.SubmitFeedback(
                pb.SubmitFeedbackRequest(
                    trace_id=trace_id, rating=pb.FEEDBACK_RATING_DOWN, comment="  cites the wrong post  "
                ),
                timeout=10,
            )
            assert response == pb.SubmitFeedbackResponse()
            async with serving_gateway(f"127.0.0.1:{rag.port}", request_timeout_s=10) as url:
                async with httpx.AsyncClient(base_url=url) as http:
                    accepted = await http.post("/v1/feedback", json={"trace_id": trace_id.upper(), "rating": "up"})
            assert (accepted.status_code, accepted.json()) == (202, {"status": "accepted"})

            assert await asyncio.to_thread(opik.wait_for, scores=2, timeout_s=20), opik.requests
            assert await wait_until(lambda: tracer.feedback_stats()["sent"] == 2), tracer.feedback_stats()

    assert [t["id"] for t in opik.traces] == [trace_id]
    down, up = sorted(opik.feedback_scores, key=lambda s: s["value"])
    assert down == {
        "id": trace_id,
        "project_name": "feedback",
        "name": "reader_rating",
        "value": 0.0,
        "reason": "cites the wrong post",
        "source": "sdk",
        "category_name": None,
    }
    assert (up["id"], up["name"], up["value"], up["project_name"]) == (trace_id, "reader_rating", 1.0, "feedback")
    assert up.get("reason") is None
    assert tracer.feedback_stats() == {"sent": 2, "dropped": 0, "failed": 0}
    assert scores_counted("sent") - sent_before == 2
    assert opik.unknown == []  # every route the SDK used is one the fake (and Opik) answers


@pytest.mark.parametrize(
    ("request_", "fields"),
    [
        (pb.SubmitFeedbackRequest(rating=pb.FEEDBACK_RATING_UP), ["trace_id"]),
        (pb.SubmitFeedbackRequest(trace_id="trace-42", rating=pb.FEEDBACK_RATING_UP), ["trace_id"]),
        (pb.SubmitFeedbackRequest(trace_id=UUID.replace("-", ""), rating=pb.FEEDBACK_RATING_UP), ["trace_id"]),
        (pb.SubmitFeedbackRequest(trace_id=UUID), ["rating"]),
        (pb.SubmitFeedbackRequest(trace_id=UUID, rating=7), ["rating"]),  # type: ignore[arg-type]
        (
            pb.SubmitFeedbackRequest(trace_id=UUID, rating=pb.FEEDBACK_RATING_DOWN, comment="é" * 1001),
            ["comment"],
        ),
        (pb.SubmitFeedbackRequest(trace_id="x", comment="x" * 5000), ["trace_id", "rating", "comment"]),
    ],
)
async def test_a_bad_rating_is_invalid_argument_naming_each_field(
    embedder, request_: pb.SubmitFeedbackRequest, fields: list[str]
) -> None:
    async with running_llm(EchoBackend()) as llm, running_rag(llm.target, embedder) as rag:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await rag.stub.SubmitFeedback(request_, timeout=10)
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(error) == "INVALID_ARGUMENT"
    assert [field for field, _ in field_violations(error)] == fields


async def test_the_gateway_refuses_a_trace_id_that_is_not_a_uuid_naming_the_field(embedder) -> None:
    async with (
        running_llm(EchoBackend()) as llm,
        running_rag(llm.target, embedder) as rag,
        serving_gateway(f"127.0.0.1:{rag.port}", request_timeout_s=10) as url,
    ):
        async with httpx.AsyncClient(base_url=url) as http:
            response = await http.post("/v1/feedback", json={"trace_id": "trace-42", "rating": "sideways"})
    assert response.status_code == 422
    assert [v["field"] for v in response.json()["error"]["field_violations"]] == ["trace_id", "rating"]


async def test_opik_down_never_fails_a_rating_and_what_was_not_sent_is_counted(embedder) -> None:
    lost_before = scores_counted("dropped") + scores_counted("failed")
    host = f"http://127.0.0.1:{free_port()}/api"  # nothing listens there
    settings = OpikSettings(host=host, api_key="test-key", workspace="default", project_name="feedback")
    tracer = OpikTracer(settings, sample_rate=1.0, buffer_size=2, flush_timeout_s=0.5)
    ratings = [
        pb.SubmitFeedbackRequest(trace_id=UUID, rating=pb.FEEDBACK_RATING_UP, comment=f"rating {i}") for i in range(8)
    ]
    async with running_llm(EchoBackend()) as llm, running_rag(llm.target, embedder, tracer=tracer) as rag:
        responses = [await rag.stub.SubmitFeedback(r, timeout=10) for r in ratings]  # more than the buffer holds
    # Leaving the block stopped the service, which closed the tracer: every rating is settled.
    assert responses == [pb.SubmitFeedbackResponse()] * len(ratings)
    stats = tracer.feedback_stats()
    assert stats["sent"] == 0 and stats["dropped"] + stats["failed"] == len(ratings), stats
    assert stats["dropped"] >= 1, stats  # beyond one buffer, an outage sheds them before the SDK
    assert scores_counted("dropped") + scores_counted("failed") - lost_before == len(ratings)


async def test_with_tracing_off_a_rating_is_accepted_and_counted_as_dropped(embedder) -> None:
    dropped_before = scores_counted("dropped")
    async with running_llm(EchoBackend()) as llm, running_rag(llm.target, embedder) as rag:  # NoopTracer
        response = await rag.stub.SubmitFeedback(
            pb.SubmitFeedbackRequest(trace_id=UUID, rating=pb.FEEDBACK_RATING_DOWN), timeout=10
        )
    assert response == pb.SubmitFeedbackResponse()
    assert scores_counted("dropped") - dropped_before == 1
