"""HTTP clients of the gateway in front of the real RAG and LLM services: the openai SDK and raw SSE."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.e2e.stack import Stack

pytestmark = pytest.mark.slow


@pytest.fixture
def client(stack: Stack) -> Iterator[openai.OpenAI]:
    """The openai SDK pointed at the gateway."""
    with openai.OpenAI(base_url=f"{stack.gateway_url}/v1", api_key="x", max_retries=0, timeout=60) as oai:
        yield oai


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, object]]]:
    """(event, data) for each server-sent event, read as the lines arrive."""
    event, data = "message", []
    for line in lines:
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif not line and data:
            yield event, json.loads("\n".join(data))
            event, data = "message", []


def test_models_lists_the_twin(client: openai.OpenAI) -> None:
    assert [model.id for model in client.models.list()] == ["llm-twin"]


def test_a_completion_answers_from_the_real_stack(client: openai.OpenAI, stack: Stack) -> None:
    completion = client.chat.completions.create(
        model="llm-twin",
        messages=[{"role": "user", "content": stack.question}],
        max_tokens=stack.max_new_tokens,
    )

    assert completion.object == "chat.completion" and completion.id.startswith("chatcmpl-")
    choice = completion.choices[0]
    assert choice.message.role == "assistant" and choice.message.content and choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    assert completion.usage is not None
    assert 0 < completion.usage.completion_tokens <= stack.max_new_tokens and completion.usage.prompt_tokens > 0


def test_a_streamed_completion_ends_with_usage(client: openai.OpenAI, stack: Stack) -> None:
    stream = client.chat.completions.create(
        model="llm-twin",
        messages=[{"role": "user", "content": stack.question}],
        max_tokens=stack.max_new_tokens,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)

    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [chunk.choices[0].delta.content for chunk in chunks if chunk.choices and chunk.choices[0].delta.content]
    assert len(pieces) >= 2 and "".join(pieces).strip()
    assert chunks[-2].choices[0].finish_reason in ("stop", "length")
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert 0 < usage.completion_tokens <= stack.max_new_tokens


def test_the_answer_stream_is_context_then_deltas_then_done(stack: Stack) -> None:
    body = {"query": stack.question, "parameters": {"max_new_tokens": stack.max_new_tokens}}
    headers = {"x-request-id": "e2e-sse-1"}
    with (
        httpx.Client(base_url=stack.gateway_url, timeout=60) as http,
        http.stream("POST", "/v1/answer/stream", json=body, headers=headers) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-request-id"] == "e2e-sse-1"
        events = list(sse_events(response.iter_lines()))

    names = [name for name, _ in events]
    assert names[0] == "context" and names[-1] == "done"
    assert set(names[1:-1]) == {"delta"} and len(names) >= 3
    context, done = events[0][1], events[-1][1]
    documents = context["documents"]
    assert isinstance(documents, list) and documents
    assert {doc["author_full_name"] for doc in documents} == {stack.author}
    assert {doc["kind"] for doc in documents} <= {"article", "post", "repository"}
    assert done["answer"] == "".join(str(data["text"]) for name, data in events if name == "delta")
    assert done["request_id"] == "e2e-sse-1" and done["trace_id"]
    assert done["finish_reason"] in ("length", "end_of_sequence", "stop_sequence")


@pytest.mark.parametrize(
    ("body", "field", "described"),
    [
        # What no schema can know: the room the model leaves for the prompt, the authors in the store.
        ({"query": "Who?", "parameters": {"max_new_tokens": 8000}}, "parameters.max_new_tokens", "too few"),
        ({"query": "Who?", "options": {"author": "Nobody Known"}}, "options.author", "Elena Varga"),
    ],
    ids=["no-room-for-the-prompt", "unknown-author"],
)
def test_a_bad_request_is_a_422_with_the_rag_services_field_violations(
    stack: Stack, body: dict[str, object], field: str, described: str
) -> None:
    rejected = 'rag_requests_total{code="INVALID_ARGUMENT",method="AnswerStream"}'
    rejected_before = stack.rag_metric(rejected)

    response = httpx.post(f"{stack.gateway_url}/v1/answer/stream", json=body, timeout=30)

    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == 422 and error["status"] == "INVALID_ARGUMENT" and error["reason"]
    (violation,) = error["field_violations"]
    assert violation["field"] == field and described in violation["description"]
    assert stack.rag_metric(rejected) == rejected_before + 1  # the RAG service said no, not the gateway
