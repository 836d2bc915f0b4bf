"""Fuzzers, bounded for CI: protobuf requests of both services over real gRPC, and the gateway's OpenAPI schema.

- hypothesis generates request messages from the protobuf descriptors (every field unset or over its whole
  range, see tests/support/proto_strategies.py) and raw bytes, sends them to every RPC of both services on
  loopback and requires a deliberate status: never INTERNAL or UNKNOWN (a server bug or a crash).
- schemathesis generates bodies from the gateway's own OpenAPI schema (valid and invalid ones) for every
  route, the streaming ones included (their SSE body is read to the end): never a 5xx, and every error in the
  gateway's error shape.

`derandomize=True`: the same examples on every run, so CI is repeatable; the example counts keep each test
to a few seconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import requests
import schemathesis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from gateway.app import create_app
from llmtwin.llm.v1 import llm_service_pb2 as llm_pb
from llmtwin.rag.v1 import rag_service_pb2 as pb
from tests.support.chain import ChainInThread
from tests.support.proto_strategies import messages
from tests.support.rag import corpus

# Codes that only a server bug produces (a crash, an unmapped exception, a missing method).
BUG_CODES = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNIMPLEMENTED}
FUZZ = settings(
    derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck), max_examples=150
)
# (service, method, request type, server streaming)
UNARY_REQUEST_METHODS = [
    ("llmtwin.llm.v1.LlmService", "Generate", llm_pb.GenerateRequest, False),
    ("llmtwin.llm.v1.LlmService", "GenerateStream", llm_pb.GenerateRequest, True),
    ("llmtwin.llm.v1.LlmService", "CountTokens", llm_pb.CountTokensRequest, False),
    ("llmtwin.llm.v1.LlmService", "GetModelInfo", llm_pb.GetModelInfoRequest, False),
    ("llmtwin.rag.v1.RagService", "Answer", pb.AnswerRequest, False),
    ("llmtwin.rag.v1.RagService", "AnswerStream", pb.AnswerRequest, True),
    ("llmtwin.rag.v1.RagService", "Retrieve", pb.RetrieveRequest, False),
    ("llmtwin.rag.v1.RagService", "SubmitFeedback", pb.SubmitFeedbackRequest, False),
]


@pytest.fixture(scope="module")
def chain() -> Iterator[ChainInThread]:
    """The three services on a background loop; three documents (one of each kind) ingested."""
    with ChainInThread(
        corpus(ids=["art-elena-001", "post-priya-001", "repo-jonas-001"]), request_timeout_s=10
    ) as running:
        yield running


@pytest.fixture(scope="module")
def channels(chain: ChainInThread) -> Iterator[dict[str, grpc.Channel]]:
    """Blocking channels to both services, by service name."""
    with grpc.insecure_channel(chain.llm_target) as llm, grpc.insecure_channel(chain.rag_target) as rag:
        yield {"llmtwin.llm.v1.LlmService": llm, "llmtwin.rag.v1.RagService": rag}


def _call(channel: grpc.Channel, path: str, payload: Any, streaming: bool, serializer: Any) -> None:
    if streaming:
        for _ in channel.unary_stream(path, request_serializer=serializer)(payload, timeout=10):
            pass
    else:
        channel.unary_unary(path, request_serializer=serializer)(payload, timeout=10)


def _check(error: grpc.RpcError, what: object) -> None:
    assert error.code() not in BUG_CODES, f"{error.code()} for {what!r}: {error.details()}"  # type: ignore[attr-defined]


def _still_serving(channels: dict[str, grpc.Channel]) -> None:
    for service, channel in channels.items():
        health = health_pb2_grpc.HealthStub(channel)
        status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status
        assert status == health_pb2.HealthCheckResponse.SERVING, service
    request = pb.AnswerRequest(query="What is a KV cache?", parameters={"max_new_tokens": 4})
    answer = channels["llmtwin.rag.v1.RagService"].unary_unary(
        "/llmtwin.rag.v1.RagService/Answer",
        request_serializer=pb.AnswerRequest.SerializeToString,
        response_deserializer=pb.AnswerResponse.FromString,
    )(request, timeout=30)
    assert answer.final.usage.completion_tokens == 4


@FUZZ
@given(data=st.data())
def test_generated_protobuf_requests_never_get_internal_or_unknown(
    channels: dict[str, grpc.Channel], data: st.DataObject
) -> None:
    service, method, request_type, streaming = data.draw(st.sampled_from(UNARY_REQUEST_METHODS), label="method")
    request = data.draw(messages(request_type.DESCRIPTOR), label="request")
    try:
        _call(channels[service], f"/{service}/{method}", request, streaming, request_type.SerializeToString)
    except grpc.RpcError as error:
        _check(error, (method, request))


@settings(FUZZ, max_examples=100)
@given(method=st.sampled_from(UNARY_REQUEST_METHODS), payload=st.binary(max_size=48))
def test_raw_bytes_never_get_internal_or_unknown(
    channels: dict[str, grpc.Channel], method: tuple[str, str, Any, bool], payload: bytes
) -> None:
    service, name, _, streaming = method
    try:
        _call(channels[service], f"/{service}/{name}", payload, streaming, None)
    except grpc.RpcError as error:
        _check(error, (name, payload))


@settings(FUZZ, max_examples=25)
@given(documents=st.lists(messages(pb.Document.DESCRIPTOR, depth=1), max_size=3))
def test_generated_ingestion_streams_never_get_internal_or_unknown(
    channels: dict[str, grpc.Channel], documents: list[pb.Document]
) -> None:
    ingest = channels["llmtwin.rag.v1.RagService"].stream_unary(
        "/llmtwin.rag.v1.RagService/IngestDocuments",
        request_serializer=pb.IngestDocumentsRequest.SerializeToString,
        response_deserializer=pb.IngestDocumentsResponse.FromString,
    )
    try:
        response = ingest(iter(pb.IngestDocumentsRequest(document=d) for d in documents), timeout=30)
    except grpc.RpcError as error:
        _check(error, documents)
        return
    assert response.documents_written + len(response.rejected) == len(documents)


def test_both_services_still_serve_after_the_fuzzers(channels: dict[str, grpc.Channel]) -> None:
    _still_serving(channels)


# ---- the gateway's OpenAPI schema ------------------------------------------------------------------------

schema = schemathesis.openapi.from_dict(create_app().openapi())


@pytest.fixture(scope="module")
def http(chain: ChainInThread) -> Iterator[requests.Session]:
    """One HTTP session for the schemathesis calls."""
    with requests.Session() as session:
        yield session


@schema.parametrize()
@settings(derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck), max_examples=40)
def test_gateway_answers_every_generated_request_without_a_server_error(
    case: schemathesis.Case, chain: ChainInThread, http: requests.Session
) -> None:
    response = case.call_and_validate(base_url=chain.gateway_url, session=http, checks=[not_a_server_error])
    if response.status_code >= 400:
        body = response.json()
        assert "error" in body and body["error"].get("message"), body  # our shape (OpenAI's on /v1/chat/...)
