"""POST /v1/feedback against a real gRPC FakeRag: the schema states the rules, bad bodies are 422s naming the field,
a good one is one SubmitFeedback call and a 202, and RAG errors keep the gateway's error shape."""

from __future__ import annotations

import json
from typing import Any

import grpc
import httpx
import pytest

from gateway.app import create_app
from gateway.routes import feedback as route
from gateway.settings import Settings
from llmtwin.rag.v1 import rag_service_pb2 as rag_pb2
from rag_service import feedback as rules
from rag_service.settings import Settings as RagSettings
from tests.support.fake_rag import Failure, FakeRag, serve_fake_rag
from tests.support.gateway import serving_gateway

TRACE_ID = "01a22fd0-abc6-7f74-a84a-6fe88a32af56"


def test_the_schema_states_the_rules() -> None:
    openapi = create_app(Settings()).openapi()
    schema = openapi["components"]["schemas"]["FeedbackRequest"]
    fields = schema["properties"]
    assert schema["required"] == ["trace_id", "rating"] and schema["additionalProperties"] is False
    assert (fields["trace_id"]["format"], fields["trace_id"]["pattern"]) == ("uuid", route.TRACE_ID_PATTERN)
    assert fields["rating"]["enum"] == ["up", "down"]
    assert (fields["comment"]["maxLength"], fields["comment"]["default"]) == (1000, "")
    operation = openapi["paths"]["/v1/feedback"]["post"]
    assert set(operation["responses"]) >= {"202", "422", "503"}
    accepted = operation["responses"]["202"]["content"]["application/json"]["schema"]
    assert accepted == {"$ref": "#/components/schemas/FeedbackAccepted"}


def test_the_rules_are_the_rag_service_ones() -> None:
    assert route.MAX_COMMENT_CHARS == rules.MAX_COMMENT_CHARS
    assert route.TRACE_ID_PATTERN == f"^{rules._UUID.pattern}$"
    assert route.RATINGS == {"up": rules.Rating.UP, "down": rules.Rating.DOWN}


@pytest.mark.parametrize(
    ("rating", "comment", "expected"),
    [
        ("up", "spot on", (rag_pb2.FEEDBACK_RATING_UP, "spot on")),
        ("down", None, (rag_pb2.FEEDBACK_RATING_DOWN, "")),
        ("down", "é" * 1000, (rag_pb2.FEEDBACK_RATING_DOWN, "é" * 1000)),  # characters, not bytes
    ],
)
async def test_a_rating_is_one_submit_feedback_call_and_a_202(
    client: httpx.AsyncClient, fake: FakeRag, rating: str, comment: str | None, expected: tuple[int, str]
) -> None:
    body: dict[str, Any] = {"trace_id": TRACE_ID, "rating": rating} | ({"comment": comment} if comment else {})
    response = await client.post("/v1/feedback", json=body, headers={"x-request-id": "fb-1"})

    assert (response.status_code, response.json()) == (202, {"status": "accepted"})
    assert response.headers["x-request-id"] == "fb-1"
    assert len(fake.feedback) == 1
    sent = fake.feedback[0]
    assert (sent.trace_id, sent.rating, sent.comment) == (TRACE_ID, *expected)
    assert fake.request_ids == [] and not fake.requests  # no answer was asked for


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"rating": "up"}, "trace_id"),
        ({"trace_id": "", "rating": "up"}, "trace_id"),
        ({"trace_id": "not-a-uuid", "rating": "up"}, "trace_id"),
        ({"trace_id": TRACE_ID.replace("-", ""), "rating": "up"}, "trace_id"),
        ({"trace_id": f" {TRACE_ID}", "rating": "up"}, "trace_id"),
        ({"trace_id": 42, "rating": "up"}, "trace_id"),
        ({"trace_id": TRACE_ID}, "rating"),
        ({"trace_id": TRACE_ID, "rating": "meh"}, "rating"),
        ({"trace_id": TRACE_ID, "rating": 1}, "rating"),
        ({"trace_id": TRACE_ID, "rating": True}, "rating"),
        ({"trace_id": TRACE_ID, "rating": "up", "comment": "x" * 1001}, "comment"),
        ({"trace_id": TRACE_ID, "rating": "up", "comment": "\ud800"}, "comment"),
        ({"trace_id": TRACE_ID, "rating": "up", "comment": None}, "comment"),
        ({"trace_id": TRACE_ID, "rating": "up", "score": 1}, "score"),
    ],
)
async def test_a_bad_body_is_a_422_naming_the_field_and_never_reaches_the_rag_service(
    client: httpx.AsyncClient, fake: FakeRag, body: dict[str, Any], field: str
) -> None:
    # JSON text with ASCII escapes, so that an unpaired surrogate ("\ud800") can be sent at all.
    raw = json.dumps(body).encode()
    response = await client.post("/v1/feedback", content=raw, headers={"content-type": "application/json"})

    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (error["status"], error["reason"]) == ("INVALID_ARGUMENT", "INVALID_ARGUMENT")
    assert [v["field"] for v in error["field_violations"]] == [field]
    assert fake.feedback == []


async def test_a_body_that_is_not_json_is_a_400(client: httpx.AsyncClient, fake: FakeRag) -> None:
    response = await client.post("/v1/feedback", content=b"{", headers={"content-type": "application/json"})
    assert response.status_code in (400, 422) and response.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert fake.feedback == []


@pytest.mark.parametrize(
    ("code", "http"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, 422),
        (grpc.StatusCode.UNAVAILABLE, 503),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
    ],
)
async def test_rag_errors_keep_the_gateway_error_shape(
    client: httpx.AsyncClient, fake: FakeRag, code: grpc.StatusCode, http: int
) -> None:
    fake.fail = Failure(code, message="upstream says no", violations=[("trace_id", "must be a UUID")])
    response = await client.post("/v1/feedback", json={"trace_id": TRACE_ID, "rating": "down"})

    assert response.status_code == http
    error = response.json()["error"]
    assert (error["code"], error["status"]) == (http, code.name)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        assert error["field_violations"] == [{"field": "trace_id", "description": "must be a UUID"}]


async def test_what_the_schema_accepts_the_rag_service_accepts() -> None:
    """Bodies at the edges of every rule pass the RAG service's own checks (rag_service.feedback)."""
    fake = FakeRag(validate=RagSettings())
    bodies = [
        {"trace_id": TRACE_ID.upper(), "rating": "up"},
        {"trace_id": "00000000-0000-0000-0000-000000000000", "rating": "down", "comment": ""},
        {"trace_id": TRACE_ID, "rating": "down", "comment": " " * 1000},
        {"trace_id": TRACE_ID, "rating": "up", "comment": "👍" * 1000},  # astral characters count once
    ]
    async with serve_fake_rag(fake) as rag, serving_gateway(rag.target, request_timeout_s=10) as url:
        async with httpx.AsyncClient(base_url=url) as http:
            statuses = [(await http.post("/v1/feedback", json=body)).status_code for body in bodies]
    assert statuses == [202] * len(bodies)
    assert fake.rejected == 0 and len(fake.feedback) == len(bodies)
