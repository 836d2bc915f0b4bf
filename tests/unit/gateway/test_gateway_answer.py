"""POST /v1/answer and /v1/answer/stream against a real gRPC FakeRag: translation, SSE, errors, cancellation."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest
from fastapi import FastAPI

from gateway.app import create_app
from gateway.settings import Settings
from llmtwin.llm.v1 import llm_service_pb2 as llm_pb2
from llmtwin.rag.v1 import rag_service_pb2 as rag_pb2
from tests.support.fake_rag import DEFAULT_CITATIONS, Failure, FakeRag, FakeRagServer

QUESTION = {"query": "What is an LLM twin?"}

# The fake's three chunks grouped by document, as the gateway must show them (kind by short name).
SOURCES = [
    {
        "number": 1,
        "document_id": "doc-1",
        "kind": "article",
        "author_id": "paul",
        "author_full_name": "Paul Iusztin",
        "title": "An end-to-end framework for production-ready LLM systems",
        "link": "https://example.org/llm-twin",
        "score": 0.91,
        "chunks": [
            {"chunk_index": 0, "score": 0.91, "vector_score": 0.72},
            {"chunk_index": 3, "score": 0.42, "vector_score": 0.58},
        ],
        "evidence": "The LLM Twin learns to write like you.",
    },
    {
        "number": 2,
        "document_id": "doc-2",
        "kind": "post",
        "author_id": "maxime",
        "author_full_name": "Maxime Labonne",
        "title": "Fine-tuning with DPO",
        "link": "https://example.org/dpo",
        "score": 0.55,
        "chunks": [{"chunk_index": 2, "score": 0.55, "vector_score": 0.61}],
        "evidence": "Preference alignment after supervised fine-tuning.",
    },
]


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, Any]]:
    """(event, decoded data) pairs of a text/event-stream response, as they arrive."""
    event, data = "message", []
    async for line in response.aiter_lines():
        if line == "":
            if data:
                yield event, json.loads("\n".join(data))
            event, data = "message", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())


async def collect(base_url: str, body: dict[str, Any]) -> list[tuple[str, Any]]:
    """Every event of one streamed answer."""
    async with httpx.AsyncClient(base_url=base_url) as http, http.stream("POST", "/v1/answer/stream", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        return [event async for event in sse_events(r)]


async def test_answer_returns_context_and_final_as_json(client: httpx.AsyncClient, fake: FakeRag) -> None:
    response = await client.post("/v1/answer", json=QUESTION)

    assert response.status_code == 200
    body = response.json()
    first = body["context"]["documents"][0]
    assert first["title"] == "An end-to-end framework for production-ready LLM systems"
    assert first["kind"] == "article"
    assert first["score"] == pytest.approx(0.91)
    assert body["context"]["author"] == {"id": "paul", "full_name": "Paul Iusztin"}
    assert body["final"]["answer"] == fake.answer
    assert body["final"]["finish_reason"] == "end_of_sequence"
    assert body["final"]["usage"]["prompt_tokens"] == 42
    assert body["final"]["model_id"] == "fake-model"
    assert body["context"]["sources"] == SOURCES
    assert body["final"]["citations"] == DEFAULT_CITATIONS


async def test_a_context_without_sources_has_an_empty_list(client: httpx.AsyncClient, fake: FakeRag) -> None:
    fake.sources = ()  # a RAG service older than the field
    fake.answer = "No sources to cite [1]."

    body = (await client.post("/v1/answer", json=QUESTION)).json()

    assert body["context"]["sources"] == [] and body["final"]["citations"] == []
    assert len(body["context"]["documents"]) == 3


async def test_options_and_parameters_reach_the_rag_service_translated(
    client: httpx.AsyncClient, fake: FakeRag
) -> None:
    body = {
        "query": "How do I fine-tune with DPO?",
        "options": {"top_k": 5, "expand_queries": 0, "rerank": False, "author": "Maxime Labonne", "kinds": ["post"]},
        "parameters": {
            "max_new_tokens": 64,
            "temperature": 0.2,
            "stop_sequences": ["\n\n"],
            "seed": 7,
            "frequency_penalty": 0.5,
            "presence_penalty": -1.25,
        },
    }
    assert (await client.post("/v1/answer", json=body)).status_code == 200

    sent = fake.requests[-1]
    assert sent.query == "How do I fine-tune with DPO?"
    assert sent.options.top_k == 5 and sent.options.HasField("expand_queries") and sent.options.expand_queries == 0
    assert sent.options.rerank is False and not sent.options.HasField("self_query")
    assert sent.options.author == "Maxime Labonne"
    assert list(sent.options.kinds) == [rag_pb2.CONTENT_KIND_POST]
    assert sent.parameters.max_new_tokens == 64 and sent.parameters.seed == 7
    assert sent.parameters.temperature == pytest.approx(0.2)
    assert not sent.parameters.HasField("top_p")
    assert list(sent.parameters.stop_sequences) == ["\n\n"]
    assert sent.parameters.frequency_penalty == 0.5 and sent.parameters.presence_penalty == -1.25


async def test_penalties_left_out_stay_unset(client: httpx.AsyncClient, fake: FakeRag) -> None:
    assert (
        await client.post("/v1/answer", json={**QUESTION, "parameters": {"presence_penalty": 0}})
    ).status_code == 200

    sent = fake.requests[-1].parameters
    assert not sent.HasField("frequency_penalty")
    assert sent.HasField("presence_penalty") and sent.presence_penalty == 0.0


async def test_a_penalty_that_is_not_a_finite_number_is_422(client: httpx.AsyncClient, fake: FakeRag) -> None:
    response = await client.post("/v1/answer", json={**QUESTION, "parameters": {"frequency_penalty": "high"}})

    assert response.status_code == 422
    assert [v["field"] for v in response.json()["error"]["field_violations"]] == ["parameters.frequency_penalty"]
    assert fake.requests == []


async def test_request_id_round_trips_from_header_to_metadata_and_back(
    client: httpx.AsyncClient, fake: FakeRag
) -> None:
    response = await client.post("/v1/answer", json=QUESTION, headers={"x-request-id": "req-42.a"})

    assert response.headers["x-request-id"] == "req-42.a"
    assert fake.request_ids[-1] == "req-42.a"
    assert fake.requests[-1].request_id == ""  # one carrier: the metadata
    assert response.json()["final"]["request_id"] == "req-42.a"


async def test_a_request_id_is_generated_when_absent_and_the_body_one_wins(
    client: httpx.AsyncClient, fake: FakeRag
) -> None:
    generated = await client.post("/v1/answer", json=QUESTION)
    request_id = generated.headers["x-request-id"]
    assert len(request_id) == 32 and fake.request_ids[-1] == request_id

    given = await client.post("/v1/answer", json={**QUESTION, "request_id": "from-body"}, headers={"x-request-id": "h"})
    assert given.headers["x-request-id"] == "from-body" == fake.request_ids[-1]


async def test_stream_sends_context_then_deltas_then_done(base_url: str, fake: FakeRag) -> None:
    events = await collect(base_url, QUESTION)

    names = [name for name, _ in events]
    assert names == ["context"] + ["delta"] * len(fake.pieces()) + ["done"]
    assert events[0][1]["documents"][1]["kind"] == "post"
    assert events[0][1]["sources"] == SOURCES
    assert events[-1][1]["citations"] == DEFAULT_CITATIONS
    assert "".join(data["text"] for name, data in events if name == "delta") == fake.answer
    assert events[-1][1]["answer"] == fake.answer
    assert events[-1][1]["finish_reason"] == "end_of_sequence"


async def test_stream_deltas_arrive_as_they_are_produced(base_url: str, fake: FakeRag) -> None:
    fake.delay_s = 0.05
    arrivals: list[float] = []
    async with (
        httpx.AsyncClient(base_url=base_url) as http,
        http.stream("POST", "/v1/answer/stream", json=QUESTION) as r,
    ):
        async for name, _ in sse_events(r):
            if name == "delta":
                arrivals.append(time.monotonic())

    # Relayed one by one, not buffered until the end: the deltas span roughly the fake's pacing.
    assert arrivals[-1] - arrivals[0] > 0.05 * (len(arrivals) - 1) * 0.6


@pytest.mark.parametrize(
    ("code", "http_status"),
    [
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
        (grpc.StatusCode.UNAVAILABLE, 503),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 504),
        (grpc.StatusCode.NOT_FOUND, 404),
        (grpc.StatusCode.PERMISSION_DENIED, 403),
        (grpc.StatusCode.INTERNAL, 500),
    ],
)
async def test_grpc_statuses_map_to_http_statuses(
    client: httpx.AsyncClient, fake: FakeRag, code: grpc.StatusCode, http_status: int
) -> None:
    fake.fail = Failure(code, message="upstream says no", reason="SOME_REASON")

    for path in ("/v1/answer", "/v1/answer/stream"):
        response = await client.post(path, json=QUESTION)
        assert response.status_code == http_status, path
        assert response.json() == {
            "error": {
                "code": http_status,
                "status": code.name,
                "message": "upstream says no",
                "reason": "SOME_REASON",
                "field_violations": [],
            }
        }


async def test_invalid_argument_is_422_with_field_violations(client: httpx.AsyncClient, fake: FakeRag) -> None:
    fake.fail = Failure(grpc.StatusCode.INVALID_ARGUMENT, violations=[("options.author", "unknown author")])

    response = await client.post("/v1/answer/stream", json={**QUESTION, "options": {"author": "Nobody"}})

    assert response.status_code == 422
    error = response.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT" and error["reason"] == "INVALID_ARGUMENT"
    assert error["field_violations"] == [{"field": "options.author", "description": "unknown author"}]
    assert "options.author: unknown author" in error["message"]


async def test_a_body_that_does_not_fit_the_model_is_422_in_the_same_shape(
    client: httpx.AsyncClient, fake: FakeRag
) -> None:
    response = await client.post("/v1/answer", json={"query": "q", "options": {"top_k": -1, "kinds": ["video"]}})

    assert response.status_code == 422
    error = response.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT"
    assert {v["field"] for v in error["field_violations"]} == {"options.top_k", "options.kinds.0"}
    assert fake.requests == []  # never reached the RAG service

    malformed = await client.post("/v1/answer", content=b"{not json", headers={"content-type": "application/json"})
    assert malformed.status_code == 422 and malformed.json()["error"]["status"] == "INVALID_ARGUMENT"


async def test_a_failure_after_the_stream_started_is_an_error_event(base_url: str, fake: FakeRag) -> None:
    fake.fail = Failure(grpc.StatusCode.UNAVAILABLE, message="LLM service went away", after_deltas=2)

    events = await collect(base_url, QUESTION)

    assert [name for name, _ in events] == ["context", "delta", "delta", "error"]
    assert events[-1][1]["error"]["code"] == 503
    assert events[-1][1]["error"]["status"] == "UNAVAILABLE"
    assert events[-1][1]["error"]["message"] == "LLM service went away"


async def test_closing_the_stream_cancels_the_rag_call_promptly(base_url: str, fake: FakeRag) -> None:
    fake.delay_s = 0.05
    fake.answer = " ".join(f"word{i}" for i in range(200))  # 10 s: still streaming when the client leaves
    async with httpx.AsyncClient(base_url=base_url) as http:
        async with http.stream("POST", "/v1/answer/stream", json=QUESTION) as response:
            async for name, _ in sse_events(response):
                if name == "delta":
                    break
        closed_at = time.monotonic()

        await asyncio.wait_for(fake.cancelled.wait(), timeout=2)
        assert fake.cancelled_at is not None and fake.cancelled_at - closed_at < 1.5  # ~1 ms when idle
        assert fake.completed == 0 and fake.deltas_sent < len(fake.pieces())
        metrics = (await http.get("/metrics")).text
    assert "gateway_streams_in_flight 0.0" in metrics


async def test_the_grpc_deadline_is_request_timeout_s(rag: FakeRagServer, fake: FakeRag, serve: Any) -> None:
    fake.delay_s = 0.5
    app: FastAPI = create_app(Settings(rag_target=rag.target, request_timeout_s=0.2))
    async with serve(app) as url:
        unary = await httpx.AsyncClient(base_url=url).post("/v1/answer", json=QUESTION)
        events = await collect(url, QUESTION)

    assert unary.status_code == 504 and unary.json()["error"]["status"] == "DEADLINE_EXCEEDED"
    assert [name for name, _ in events] == ["context", "error"]
    assert events[-1][1]["error"]["code"] == 504


async def test_an_unreachable_rag_service_is_503(serve: Any) -> None:
    app = create_app(Settings(rag_target="127.0.0.1:1", request_timeout_s=2))
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        response = await http.post("/v1/answer/stream", json=QUESTION)

    assert response.status_code == 503
    assert response.json()["error"]["status"] == "UNAVAILABLE"


def test_finish_reason_length_is_reported_by_name() -> None:
    from gateway.models import final_from_proto

    final = final_from_proto(rag_pb2.AnswerFinal(finish_reason=llm_pb2.FINISH_REASON_LENGTH))
    assert final.finish_reason == "length"


FOLLOW_UP = {
    "query": "How is it trained?",
    "conversation_id": "c0ffee00-1234-4abc-8def-0123456789ab",
    "history": [
        {"role": "system", "content": "Answer in one sentence."},
        {"role": "user", "content": "What is an LLM twin?"},
        {"role": "assistant", "content": "A model that writes like you [1]."},
    ],
}


@pytest.mark.parametrize("path", ["/v1/answer", "/v1/answer/stream"])
async def test_a_follow_up_passes_its_history_and_conversation_id(
    client: httpx.AsyncClient, fake: FakeRag, path: str
) -> None:
    response = await client.post(path, json=FOLLOW_UP)

    assert response.status_code == 200
    sent = fake.requests[-1]
    assert sent.query == "How is it trained?" and sent.conversation_id == FOLLOW_UP["conversation_id"]
    assert [(t.role, t.content) for t in sent.history] == [
        (rag_pb2.TURN_ROLE_SYSTEM, "Answer in one sentence."),
        (rag_pb2.TURN_ROLE_USER, "What is an LLM twin?"),
        (rag_pb2.TURN_ROLE_ASSISTANT, "A model that writes like you [1]."),
    ]


async def test_the_context_says_what_was_searched(client: httpx.AsyncClient, fake: FakeRag) -> None:
    response = await client.post("/v1/answer", json=FOLLOW_UP)
    # The fake searches the question as asked; the field is passed through.
    assert response.json()["context"]["standalone_query"] == ""


@pytest.mark.parametrize(
    ("history", "field"),
    [
        ([{"role": "system", "content": "a"}, {"role": "system", "content": "b"}], "history"),
        ([{"role": "user", "content": "  "}], "history.0.content"),
        ([{"role": "assistant", "content": ""}], "history.0.content"),
        ([{"role": "tool", "content": "x"}], "history.0"),
        ([{"role": "system", "content": "x" * 1001}], "history.0.content"),
        ([{"role": "user", "content": "x" * 2001}], "history.0.content"),
        ([{"role": "user", "content": "q"}] * 21, "history"),
    ],
)
async def test_a_history_outside_its_bounds_is_refused_by_the_gateway(
    client: httpx.AsyncClient, fake: FakeRag, history: list[dict[str, str]], field: str
) -> None:
    response = await client.post("/v1/answer", json={"query": "Why?", "history": history})

    assert response.status_code == 422
    assert response.json()["error"]["field_violations"][0]["field"] == field
    assert fake.requests == []


async def test_a_bad_conversation_id_is_refused(client: httpx.AsyncClient, fake: FakeRag) -> None:
    for conversation_id in ["x" * 129, "caf\u00e9", "tab\there"]:
        response = await client.post("/v1/answer", json={"query": "Why?", "conversation_id": conversation_id})
        assert response.status_code == 422, conversation_id
        assert response.json()["error"]["field_violations"][0]["field"] == "conversation_id"
    assert fake.requests == []


async def test_a_long_history_keeps_the_instruction_and_the_most_recent_turns_that_fit(
    rag: FakeRagServer, fake: FakeRag
) -> None:
    history = [{"role": "system", "content": "Be brief."}]
    for i in range(6):
        history += [
            {"role": "user", "content": f"q{i} " + "x" * 96},
            {"role": "assistant", "content": f"a{i} " + "y" * 96},
        ]
    app = create_app(Settings(rag_target=rag.target, request_timeout_s=10, max_history_chars=9 + 5 * 99 + 50))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
            response = await http.post("/v1/answer", json={"query": "And?", "history": history})

    assert response.status_code == 200
    sent = [t.content[:2] for t in fake.requests[-1].history]
    # Five turns of 99 characters fit after the instruction; the fifth-newest is an answer whose question did not
    # fit, so it is left out as well.
    assert sent == ["Be", "q4", "a4", "q5", "a5"]
