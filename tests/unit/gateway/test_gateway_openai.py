"""The OpenAI-compatible API, driven by the real `openai` client against the gateway under uvicorn."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import httpx
import openai
import pytest

from gateway.app import create_app
from gateway.settings import Settings
from llmtwin.llm.v1 import llm_service_pb2 as llm_pb2
from llmtwin.rag.v1 import rag_service_pb2 as rag_pb2
from tests.support.fake_rag import DEFAULT_CITATIONS, Failure, FakeRag, FakeRagServer
from tests.support.gateway import serving


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    """An OpenAI client whose base URL is the gateway."""
    async with openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0) as oai:
        yield oai


MESSAGES = [
    {"role": "system", "content": "You are my twin."},
    {"role": "user", "content": "An earlier question"},
    {"role": "assistant", "content": "An earlier answer"},
    {"role": "user", "content": "What is an LLM twin?"},
]


async def test_models_lists_the_one_model(client: openai.AsyncOpenAI) -> None:
    models = [model.id async for model in client.models.list()]
    assert models == ["llm-twin"]


async def test_a_completion_answers_the_last_user_message(client: openai.AsyncOpenAI, fake: FakeRag) -> None:
    completion = await client.chat.completions.create(
        model="llm-twin",
        messages=MESSAGES,
        temperature=0.3,
        top_p=0.9,
        max_tokens=50,
        stop="###",
        seed=3,
        frequency_penalty=0.5,
        presence_penalty=-1.25,  # type: ignore[arg-type]
    )

    assert completion.object == "chat.completion" and completion.model == "llm-twin"
    assert completion.id == f"chatcmpl-{fake.request_ids[-1]}"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == fake.answer
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.prompt_tokens == 42
    assert completion.usage.total_tokens == 42 + len(fake.pieces())
    # The extension field: the SDK keeps fields it does not know in model_extra.
    assert completion.model_extra is not None and completion.model_extra["citations"] == DEFAULT_CITATIONS

    sent = fake.requests[-1]
    assert sent.query == "What is an LLM twin?"
    assert sent.parameters.max_new_tokens == 50 and sent.parameters.seed == 3
    assert sent.parameters.temperature == pytest.approx(0.3) and sent.parameters.top_p == pytest.approx(0.9)
    assert list(sent.parameters.stop_sequences) == ["###"]
    assert sent.parameters.frequency_penalty == 0.5 and sent.parameters.presence_penalty == -1.25


async def test_max_completion_tokens_wins_and_length_is_reported(client: openai.AsyncOpenAI, fake: FakeRag) -> None:
    fake.finish_reason = llm_pb2.FINISH_REASON_LENGTH
    completion = await client.chat.completions.create(
        model="llm-twin",
        messages=[{"role": "user", "content": [{"type": "text", "text": "Parts"}, {"type": "text", "text": " too"}]}],
        max_tokens=10,
        max_completion_tokens=20,
        extra_body={"options": {"author": "Paul Iusztin"}},
    )

    assert completion.choices[0].finish_reason == "length"
    sent = fake.requests[-1]
    assert sent.query == "Parts too" and sent.parameters.max_new_tokens == 20
    assert not sent.parameters.HasField("frequency_penalty") and not sent.parameters.HasField("presence_penalty")
    assert sent.options.author == "Paul Iusztin"


async def test_streaming_sends_role_then_content_then_finish_then_usage(
    client: openai.AsyncOpenAI, fake: FakeRag
) -> None:
    stream = await client.chat.completions.create(
        model="llm-twin",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},  # type: ignore[arg-type]
    )
    chunks = [chunk async for chunk in stream]

    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert len({chunk.id for chunk in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert content == fake.answer
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert getattr(chunks[-2], "citations", None) == DEFAULT_CITATIONS
    others = chunks[:-2] + chunks[-1:]
    assert [getattr(chunk, "citations", None) for chunk in others] == [None] * len(others)
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == len(fake.pieces())


async def test_streaming_without_usage_ends_with_the_finish_chunk(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(model="llm-twin", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
    chunks = [chunk async for chunk in stream]

    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].model_extra is not None and chunks[-1].model_extra["citations"] == DEFAULT_CITATIONS
    assert all(chunk.usage is None for chunk in chunks)


async def test_an_answer_that_cites_nothing_has_empty_citations(client: openai.AsyncOpenAI, fake: FakeRag) -> None:
    fake.answer = "Nothing cited here, and [9] names no source."
    completion = await client.chat.completions.create(model="llm-twin", messages=MESSAGES)  # type: ignore[arg-type]
    stream = await client.chat.completions.create(model="llm-twin", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
    last = [chunk async for chunk in stream][-1]

    assert completion.model_extra is not None and completion.model_extra["citations"] == []
    assert last.choices[0].finish_reason == "stop"
    assert last.model_extra is not None and last.model_extra["citations"] == []


async def test_the_raw_stream_ends_with_done(base_url: str) -> None:
    body = {"model": "llm-twin", "messages": MESSAGES, "stream": True}
    async with httpx.AsyncClient(base_url=base_url) as http:
        response = await http.post("/v1/chat/completions", json=body)
    data_lines = [line for line in response.text.splitlines() if line.startswith("data:")]
    assert data_lines[-1] == "data: [DONE]"


async def test_errors_keep_the_status_mapping_in_openais_shape(client: openai.AsyncOpenAI, fake: FakeRag) -> None:
    fake.fail = Failure(grpc.StatusCode.RESOURCE_EXHAUSTED, message="too busy", reason="OVERLOADED")
    with pytest.raises(openai.RateLimitError) as busy:
        await client.chat.completions.create(model="llm-twin", messages=MESSAGES)  # type: ignore[arg-type]
    assert busy.value.status_code == 429
    assert busy.value.body == {"message": "too busy", "type": "rate_limit_error", "code": "OVERLOADED", "param": None}

    fake.fail = Failure(grpc.StatusCode.INVALID_ARGUMENT, violations=[("query", "must not be empty")])
    with pytest.raises(openai.UnprocessableEntityError) as invalid:
        await client.chat.completions.create(model="llm-twin", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
    assert invalid.value.status_code == 422
    assert isinstance(invalid.value.body, dict) and invalid.value.body["param"] == "query"


async def test_a_request_without_messages_is_rejected_in_openais_shape(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url) as http:
        response = await http.post("/v1/chat/completions", json={"model": "llm-twin", "messages": []})
    assert response.status_code == 422
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert response.json()["error"]["param"] == "messages"


async def test_a_failure_mid_stream_raises_in_the_client(client: openai.AsyncOpenAI, fake: FakeRag) -> None:
    fake.fail = Failure(grpc.StatusCode.UNAVAILABLE, message="LLM service went away", after_deltas=1)
    stream = await client.chat.completions.create(model="llm-twin", messages=MESSAGES, stream=True)  # type: ignore[arg-type]

    with pytest.raises(openai.APIError, match="LLM service went away"):
        async for _ in stream:
            pass


USER, ASSISTANT, SYSTEM = rag_pb2.TURN_ROLE_USER, rag_pb2.TURN_ROLE_ASSISTANT, rag_pb2.TURN_ROLE_SYSTEM


@pytest.mark.parametrize("stream", [False, True])
async def test_a_multi_turn_chat_sends_the_earlier_turns_as_history(
    client: openai.AsyncOpenAI, fake: FakeRag, stream: bool
) -> None:
    # A chat as an SDK user builds it: the first answer appended, then the follow-up.
    messages: list[dict[str, object]] = [
        {"role": "system", "content": "You are my twin."},
        {"role": "user", "content": "What is an LLM twin?"},
    ]
    first = await client.chat.completions.create(model="llm-twin", messages=messages)  # type: ignore[arg-type]
    assert [(t.role, t.content) for t in fake.requests[-1].history] == [(SYSTEM, "You are my twin.")]
    messages += [
        {"role": "assistant", "content": first.choices[0].message.content},
        {"role": "developer", "content": [{"type": "text", "text": "Cite your sources."}]},
        {"role": "tool", "tool_call_id": "t1", "content": "ignored"},
        {"role": "user", "content": [{"type": "text", "text": "How is "}, {"type": "text", "text": "it trained?"}]},
    ]
    if stream:
        chunks = await client.chat.completions.create(
            model="llm-twin",
            messages=messages,  # type: ignore[arg-type]
            stream=True,
            extra_body={"conversation_id": "chat-42"},
        )
        assert "".join([c.choices[0].delta.content or "" async for c in chunks if c.choices]) == fake.answer
    else:
        completion = await client.chat.completions.create(
            model="llm-twin",
            messages=messages,  # type: ignore[arg-type]
            extra_body={"conversation_id": "chat-42"},
        )
        assert completion.choices[0].message.content == fake.answer

    sent = fake.requests[-1]
    assert sent.query == "How is it trained?" and sent.conversation_id == "chat-42"
    assert [(t.role, t.content) for t in sent.history] == [
        (SYSTEM, "You are my twin.\n\nCite your sources."),
        (USER, "What is an LLM twin?"),
        (ASSISTANT, fake.answer),
    ]


async def test_a_long_chat_is_cut_to_the_history_bounds_not_refused(rag: FakeRagServer, fake: FakeRag) -> None:
    messages: list[dict[str, str]] = [{"role": "system", "content": "s" * 1500}]
    for i in range(15):
        messages += [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i} " + "y" * 2500}]
    messages += [{"role": "assistant", "content": ""}, {"role": "user", "content": "Last?"}]
    settings = Settings(rag_target=rag.target, request_timeout_s=10, max_history_turns=6, max_history_chars=7000)
    async with serving(create_app(settings)) as url:
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0) as oai:
            await oai.chat.completions.create(model="llm-twin", messages=messages)  # type: ignore[arg-type]

    sent = fake.requests[-1]
    assert sent.query == "Last?"
    roles = [t.role for t in sent.history]
    lengths = [len(t.content) for t in sent.history]
    # The instruction cut to 1000 characters, each answer to 2000 (the question limit), the empty answer left out;
    # then the most recent turns within 6 turns and 7000 characters: five from a12 on, and a12 without its
    # question is left out too.
    assert roles == [SYSTEM, USER, ASSISTANT, USER, ASSISTANT]
    assert lengths == [1000, 3, 2000, 3, 2000]
    assert [t.content[:3] for t in sent.history[1:]] == ["q13", "a13", "q14", "a14"]
