"""OpenAIBackend through the openai SDK against a loopback vLLM stand-in (tests/support/fake_vllm.py).

What every backend promises is in tests/integration/test_backend_contract.py (run there against llama.cpp's
real server and this fake); here: what is particular to OpenAI-compatible servers: request bodies per
dialect, adapters, logprobs, limits from the server or the configuration, error statuses.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from llm_service.backends.factory import make_backend
from llm_service.backends.openai import OpenAIBackend
from llm_service.backends.openai_payload import parse_adapter_ids, read_profile, request_body
from llm_service.errors import BackendError, BackendUnavailable, InvalidArgument, Overloaded
from llm_service.settings import Settings
from llm_service.types import Completion, FinishReason, GenerationInput, Message, Parameters, Request, Token
from tests.support.fake_tgi import fake_chat_template, fake_tokenize
from tests.support.fake_vllm import FakeVllm

MESSAGES = (Message("system", "You are a twin."), Message("user", "Write about RAG"))


@pytest.fixture(scope="module")
def vllm_server() -> Iterator[FakeVllm]:
    fake = FakeVllm()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def vllm(vllm_server: FakeVllm) -> FakeVllm:
    vllm_server.reset()
    return vllm_server


@pytest.fixture
async def backend(vllm: FakeVllm) -> AsyncIterator[OpenAIBackend]:
    b = OpenAIBackend(f"{vllm.url}/v1", api_key="sk-test", timeout_s=5)
    await b.start()
    yield b
    await b.aclose()


def request(*, messages: bool = False, adapter: str = "", **params: object) -> Request:
    input = GenerationInput(messages=MESSAGES) if messages else GenerationInput(prompt="Write about RAG")
    return Request(input, Parameters(**params), "req-1", adapter=adapter)  # type: ignore[arg-type]


async def collect(backend: OpenAIBackend, req: Request) -> tuple[list[Token], Completion]:
    items = [item async for item in backend.generate(req)]
    assert all(isinstance(i, Token) for i in items[:-1]) and isinstance(items[-1], Completion)
    return items[:-1], items[-1]  # type: ignore[return-value]


# -- start: model, limits, adapters ----------------------------------------------------------------------------


async def test_info_comes_from_the_servers_model_list(backend: OpenAIBackend, vllm: FakeVllm) -> None:
    info = backend.info()
    assert (info.model_id, info.backend) == ("fake/twin-llm", "openai")
    assert (info.max_input_tokens, info.max_total_tokens) == (2047, 2048)
    assert info.adapters == ("twin-style",)  # vLLM's LoRA modules: entries with a parent


async def test_configured_limits_apply_when_the_server_does_not_say(vllm: FakeVllm) -> None:
    vllm.max_model_len = 0  # an Ollama or a hosted endpoint: no max_model_len in /v1/models
    b = OpenAIBackend(f"{vllm.url}/v1", max_input_tokens=1000, max_total_tokens=1500, model_id="twin")
    await b.start()
    try:
        info = b.info()
        assert (info.model_id, info.max_input_tokens, info.max_total_tokens) == ("twin", 1000, 1500)
        assert await b.count_tokens(GenerationInput(prompt="x" * 40)) == 10  # estimated: 4 characters a token
        assert vllm.requests == []
        _, completion = await collect(b, request(max_new_tokens=3, stop_sequences=(" is",)))
        assert "stop" not in vllm.requests[-1]  # the server would not say which stop ended it: matched here
        assert completion.text == "The sea" and completion.finish_reason == FinishReason.STOP_SEQUENCE
    finally:
        await b.aclose()


async def test_start_fails_with_unavailable_when_the_model_list_fails(vllm: FakeVllm) -> None:
    b = OpenAIBackend(f"{vllm.url}/nowhere/v1")
    with pytest.raises(BackendUnavailable, match="HTTP 404"):
        await b.start()
    await b.aclose()


async def test_health_follows_the_servers_health_route(backend: OpenAIBackend, vllm: FakeVllm) -> None:
    assert await backend.check_health()
    vllm.healthy = False
    assert not await backend.check_health()


# -- requests ----------------------------------------------------------------------------------------------------


async def test_prompt_body_sends_four_stops_and_vllm_extras(backend: OpenAIBackend, vllm: FakeVllm) -> None:
    stops = tuple(f"zz{i}" for i in range(6))
    req = request(
        max_new_tokens=5, temperature=0.5, top_p=0.9, top_k=20, repetition_penalty=1.1, seed=7, stop_sequences=stops
    )
    await collect(backend, req)
    body = vllm.requests[-1]
    assert body["model"] == "fake/twin-llm" and body["prompt"] == "Write about RAG"
    assert body["stop"] == ["zz0", "zz1", "zz2", "zz3"]  # OpenAI's limit; the rest are matched here
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["seed"]) == (5, 0.5, 0.9, 7)
    assert (body["top_k"], body["repetition_penalty"]) == (20, 1.1)
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert vllm.headers[-1]["authorization"] == "Bearer sk-test"


async def test_messages_stream_from_the_chat_route_with_usage(backend: OpenAIBackend, vllm: FakeVllm) -> None:
    tokens, completion = await collect(backend, request(messages=True, max_new_tokens=3))
    assert vllm.requests[-1]["messages"] == [{"role": m.role, "content": m.content} for m in MESSAGES]
    assert [t.text for t in tokens] == ["The", " sea", " is"]
    assert completion.finish_reason == FinishReason.LENGTH and completion.completion_tokens == 3
    assert completion.prompt_tokens == len(fake_tokenize(fake_chat_template(vllm.requests[-1]["messages"])))
    assert completion.prompt_tokens == await backend.count_tokens(GenerationInput(messages=MESSAGES))


@pytest.mark.parametrize("messages", [False, True])
async def test_logprobs_are_passed_through(backend: OpenAIBackend, vllm: FakeVllm, messages: bool) -> None:
    tokens, _ = await collect(backend, request(messages=messages, max_new_tokens=3, return_logprobs=True))
    assert [t.logprob for t in tokens] == [-0.25, -0.5, -0.75]
    assert vllm.requests[-1]["logprobs"] == (True if messages else 1)


async def test_a_stop_the_server_matched_is_a_stop_sequence_finish(backend: OpenAIBackend) -> None:
    tokens, completion = await collect(backend, request(max_new_tokens=8, stop_sequences=(" wide",)))
    assert "".join(t.text for t in tokens) == completion.text == "The sea is"
    assert completion.finish_reason == FinishReason.STOP_SEQUENCE
    _, eos = await collect(backend, request(max_new_tokens=64))
    assert eos.finish_reason == FinishReason.END_OF_SEQUENCE and eos.completion_tokens == 9


# -- adapters ----------------------------------------------------------------------------------------------------


async def test_a_vllm_adapter_is_requested_by_its_model_name(backend: OpenAIBackend, vllm: FakeVllm) -> None:
    await collect(backend, request(max_new_tokens=2, adapter="twin-style"))
    assert vllm.requests[-1]["model"] == "twin-style"


async def test_an_unknown_adapter_is_invalid_and_names_the_known_ones(backend: OpenAIBackend, vllm: FakeVllm) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await collect(backend, request(adapter="nope"))
    assert caught.value.violations == [("adapter", "unknown adapter 'nope'; this backend serves: twin-style")]
    assert vllm.requests == []


async def test_an_adapter_the_server_no_longer_serves_is_invalid(vllm: FakeVllm) -> None:
    b = OpenAIBackend(f"{vllm.url}/v1", adapters={"gone": 0})
    await b.start()
    try:
        with pytest.raises(InvalidArgument, match="does not exist"):
            await collect(b, request(adapter="gone"))
    finally:
        await b.aclose()


def test_llamacpp_adapters_go_in_a_lora_list_that_also_switches_the_others_off() -> None:
    adapters = parse_adapter_ids("style, legal=3")
    assert adapters == {"style": 0, "legal": 3}
    body = request_body(
        request(adapter="legal", top_k=5, repetition_penalty=1.2, stop_sequences=("x",)),
        dialect="llamacpp",
        model="m",
        adapters=adapters,
        chat=False,
    )
    assert body["model"] == "m" and "stop" not in body
    assert body["extra_body"] == {
        "top_k": 5,
        "repeat_penalty": 1.2,
        "lora": [{"id": 0, "scale": 0.0}, {"id": 3, "scale": 1.0}],
    }
    base = request_body(request(), dialect="llamacpp", model="m", adapters=adapters, chat=True)
    assert base["extra_body"] == {"lora": [{"id": 0, "scale": 0.0}, {"id": 3, "scale": 0.0}]}


def test_plain_openai_servers_get_no_extra_fields() -> None:
    body = request_body(request(top_k=5, repetition_penalty=1.2), dialect="openai", model="m", adapters={}, chat=True)
    assert "extra_body" not in body


def test_bad_adapter_lists_are_refused() -> None:
    with pytest.raises(ValueError, match="not an integer"):
        parse_adapter_ids("a=x")
    with pytest.raises(ValueError, match="without a name"):
        parse_adapter_ids("=2")


def test_profile_of_llamacpp_reads_the_slot_context_from_props() -> None:
    profile = read_profile([{"id": "/models/a.gguf"}], {"default_generation_settings": {"n_ctx": 4096}}, "")
    assert (profile.dialect, profile.model, profile.max_total_tokens) == ("llamacpp", "/models/a.gguf", 4096)
    with pytest.raises(BackendUnavailable, match="LLM_OPENAI_MODEL"):
        read_profile([], None, "")


# -- errors ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind", "error"),
    [
        (429, "TooManyRequests", Overloaded),
        (503, "ServiceUnavailable", BackendUnavailable),
        (500, "InternalServerError", BackendError),
        (401, "Unauthorized", BackendError),
        (400, "BadRequestError", InvalidArgument),
    ],
)
async def test_http_errors_map_to_service_errors(
    backend: OpenAIBackend, vllm: FakeVllm, status: int, kind: str, error: type[Exception]
) -> None:
    vllm.http_error = (status, kind, "the server says no")
    with pytest.raises(error, match="the server says no"):
        await collect(backend, request())


async def test_a_prompt_beyond_the_context_is_invalid_on_the_prompt(backend: OpenAIBackend) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await collect(backend, request(max_new_tokens=2048))
    [(field, message)] = caught.value.violations
    assert field == "prompt" and "maximum context length is 2048" in message


async def test_an_error_event_mid_stream_is_a_backend_error(backend: OpenAIBackend, vllm: FakeVllm) -> None:
    vllm.error_after = 2
    got = []
    with pytest.raises(BackendError, match="CUDA out of memory"):
        async for item in backend.generate(request(max_new_tokens=8)):
            got.append(item)
    assert [t.text for t in got] == ["The", " sea"]  # type: ignore[union-attr]


async def test_the_factory_builds_it_from_settings() -> None:
    settings = Settings(
        backend="openai",
        openai_base_url="http://127.0.0.1:9/v1",
        openai_api_key="k",
        openai_adapters="a,b=4",
        openai_model="base",
    )
    backend = make_backend(settings)
    assert isinstance(backend, OpenAIBackend)
    assert backend.info().model_id == "base"
    await backend.aclose()
