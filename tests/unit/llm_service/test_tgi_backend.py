"""TgiBackend against a loopback server that speaks TGI's HTTP API (tests/support/fake_tgi.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator

import huggingface_hub
import pytest

from llm_service.backends.base import Backend
from llm_service.backends.tgi import TgiBackend
from llm_service.errors import BackendError, BackendUnavailable, InvalidArgument, Overloaded
from llm_service.types import (
    Completion,
    FinishReason,
    GenerationInput,
    Message,
    Parameters,
    Request,
    Token,
)
from tests.support.fake_tgi import FakeTgi, ServerThread, fake_chat_template, fake_tokenize

PROMPT = "Write about RAG"
MESSAGES = (Message("system", "You are a twin."), Message("user", "Write about RAG"))


@pytest.fixture(scope="module")
def tgi_server() -> Iterator[FakeTgi]:
    fake = FakeTgi()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def tgi(tgi_server: FakeTgi) -> FakeTgi:
    tgi_server.reset()
    return tgi_server


@pytest.fixture
async def backend(tgi: FakeTgi) -> AsyncIterator[TgiBackend]:
    b = TgiBackend(tgi.url, timeout_s=5, headers={"Authorization": "Bearer test-token"})
    await b.start()
    yield b
    await b.aclose()


def request(*, messages: bool = False, **params: object) -> Request:
    input = GenerationInput(messages=MESSAGES) if messages else GenerationInput(prompt=PROMPT)
    return Request(input, Parameters(**params), "req-1")  # type: ignore[arg-type]


async def collect(backend: TgiBackend, req: Request) -> tuple[list[Token], Completion]:
    items = [item async for item in backend.generate(req)]
    assert all(isinstance(i, Token) for i in items[:-1])
    assert isinstance(items[-1], Completion)
    return items[:-1], items[-1]  # type: ignore[return-value]


async def test_start_reads_the_model_and_its_limits_from_info(backend: TgiBackend) -> None:
    assert isinstance(backend, Backend)
    info = backend.info()
    assert (info.model_id, info.backend, info.max_input_tokens, info.max_total_tokens) == (
        "fake/twin-llm",
        "tgi",
        1024,
        2048,
    )
    assert info.model_revision == "0123abcd"
    assert await backend.check_health()


async def test_works_in_hub_offline_mode_set_by_the_test_suite(backend: TgiBackend) -> None:
    # HF_HUB_OFFLINE=1 makes the stock AsyncInferenceClient refuse every URL; ours must still stream.
    assert huggingface_hub.constants.is_offline_mode()
    tokens, _ = await collect(backend, request())
    assert tokens


async def test_prompt_streams_tokens_then_one_completion(backend: TgiBackend, tgi: FakeTgi) -> None:
    tokens, completion = await collect(backend, request(temperature=0, return_logprobs=True))

    assert [t.text for t in tokens] == ["Hello", ",", " wörld", "!"]  # the special EOS token is left out
    assert [t.token_id for t in tokens] == [100, 101, 102, 103]
    assert tokens[0].logprob == -0.25
    assert completion == Completion(FinishReason.END_OF_SEQUENCE, len(fake_tokenize(PROMPT)), 5, "Hello, wörld!")
    # Greedy: TGI rejects temperature 0, so no sampling knobs at all.
    sent = tgi.requests[-1]
    assert sent["stream"] is True
    assert sent["parameters"]["do_sample"] is False
    assert "temperature" not in sent["parameters"] and "top_p" not in sent["parameters"]
    assert tgi.headers[-1]["authorization"] == "Bearer test-token"


async def test_sampling_parameters_are_sent_as_tgi_takes_them(backend: TgiBackend, tgi: FakeTgi) -> None:
    await collect(backend, request(temperature=0.7, top_p=0.9, top_k=40, repetition_penalty=1.1, seed=7))
    params = tgi.requests[-1]["parameters"]
    assert params["do_sample"] is True
    assert (params["temperature"], params["top_p"], params["top_k"]) == (0.7, 0.9, 40)
    assert (params["repetition_penalty"], params["seed"], params["max_new_tokens"]) == (1.1, 7, 256)
    assert params["details"] is True


async def test_repetition_controls_reach_both_tgi_routes(backend: TgiBackend, tgi: FakeTgi) -> None:
    penalties = {"repetition_penalty": 1.2, "frequency_penalty": 0.5, "presence_penalty": 0.3}
    await collect(backend, request(temperature=0.2, **penalties))
    params = tgi.requests[-1]["parameters"]
    assert (params["repetition_penalty"], params["frequency_penalty"]) == (1.2, 0.5)
    assert "presence_penalty" not in params  # TGI's generate route has none

    await collect(backend, request(messages=True, temperature=0.2, **penalties))
    sent = tgi.requests[-1]
    assert (sent["frequency_penalty"], sent["presence_penalty"]) == (0.5, 0.3)
    assert "repetition_penalty" not in sent  # the OpenAI-style chat route has none

    await collect(backend, request(messages=True))
    assert "frequency_penalty" not in tgi.requests[-1] and "presence_penalty" not in tgi.requests[-1]  # 0: off


async def test_prompt_finish_reasons_length_and_stop_sequence(backend: TgiBackend) -> None:
    tokens, completion = await collect(backend, request(max_new_tokens=2))
    assert ([t.text for t in tokens], completion.finish_reason) == (["Hello", ","], FinishReason.LENGTH)
    assert completion.completion_tokens == 2

    tokens, completion = await collect(backend, request(stop_sequences=("wörld",)))
    assert completion.finish_reason == FinishReason.STOP_SEQUENCE
    assert [t.text for t in tokens] == ["Hello", ",", " "]  # the stop sequence is not in the output
    assert completion.text == "Hello, "


async def test_chat_messages_stream_with_usage(backend: TgiBackend, tgi: FakeTgi) -> None:
    tokens, completion = await collect(backend, request(messages=True, temperature=0))

    assert [t.text for t in tokens] == ["Hello", ",", " wörld", "!"]
    prompt_tokens = len(fake_tokenize(fake_chat_template([{"role": m.role, "content": m.content} for m in MESSAGES])))
    assert completion == Completion(FinishReason.END_OF_SEQUENCE, prompt_tokens, 5, "Hello, wörld!")
    sent = tgi.requests[-1]
    assert sent["messages"][1] == {"role": "user", "content": "Write about RAG"}
    assert (sent["max_tokens"], sent["temperature"], sent["stream_options"]) == (256, 0.0, {"include_usage": True})


async def test_chat_tells_a_stop_sequence_from_the_end_of_sequence(backend: TgiBackend) -> None:
    _, completion = await collect(backend, request(messages=True, stop_sequences=("wörld",)))
    assert (completion.finish_reason, completion.text) == (FinishReason.STOP_SEQUENCE, "Hello, ")

    _, completion = await collect(backend, request(messages=True, max_new_tokens=3))
    assert completion.finish_reason == FinishReason.LENGTH


async def test_count_tokens_asks_tgi(backend: TgiBackend, tgi: FakeTgi) -> None:
    assert await backend.count_tokens(GenerationInput(prompt=PROMPT)) == len(fake_tokenize(PROMPT))
    templated = fake_chat_template([{"role": m.role, "content": m.content} for m in MESSAGES])
    assert await backend.count_tokens(GenerationInput(messages=MESSAGES)) == len(fake_tokenize(templated))

    tgi.tokenize_routes = False  # a TGI without a fast tokenizer: estimate 4 characters per token
    assert await backend.count_tokens(GenerationInput(prompt="x" * 10)) == 3


@pytest.mark.parametrize(("error_type", "expected"), [("generation", BackendError), ("overloaded", Overloaded)])
async def test_error_event_mid_stream(backend: TgiBackend, tgi: FakeTgi, error_type: str, expected: type) -> None:
    tgi.error_after, tgi.error_type = 2, error_type
    got: list[str] = []
    with pytest.raises(expected) as info:
        async for item in backend.generate(request()):
            got.append(item.text)  # type: ignore[union-attr]
    assert got == ["Hello", ","]
    if expected is BackendError:
        assert "CUDA out of memory" in str(info.value)


async def test_validation_and_overload_statuses(backend: TgiBackend, tgi: FakeTgi) -> None:
    tgi.http_error = (422, {"error": "Input validation error: `top_p` must be > 0.0", "error_type": "validation"})
    with pytest.raises(InvalidArgument) as info:
        await collect(backend, request())
    assert info.value.violations[0][0] == "parameters"
    assert "top_p" in info.value.violations[0][1]

    with pytest.raises(InvalidArgument):  # the chat route's errors too
        await collect(backend, request(messages=True))

    tgi.http_error = (429, {"error": "Model is overloaded", "error_type": "overloaded"})
    with pytest.raises(Overloaded):
        await collect(backend, request())


async def test_slow_tokens_arrive_as_they_are_produced(backend: TgiBackend, tgi: FakeTgi) -> None:
    tgi.token_delay_s = 0.05
    produced_when_received = []
    async for _ in backend.generate(request()):
        produced_when_received.append(tgi.produced)
    assert produced_when_received[0] == 1  # the first token came before the second was produced
    assert produced_when_received[-1] == 5


async def test_cancel_closes_the_stream_and_tgi_stops_generating(backend: TgiBackend, tgi: FakeTgi) -> None:
    tgi.tokens, tgi.token_delay_s = ["tok"] * 40, 0.03
    stream = backend.generate(request())
    assert isinstance(stream, AsyncGenerator)  # closable, as the servicer closes it
    for _ in range(3):
        await anext(stream)
    await stream.aclose()

    await _until(lambda: tgi.active == 0)
    stopped_at = tgi.produced
    await asyncio.sleep(0.15)
    assert tgi.produced == stopped_at < 25  # of 40


async def test_cancelled_consumer_task_stops_tgi(backend: TgiBackend, tgi: FakeTgi) -> None:
    tgi.tokens, tgi.token_delay_s = ["tok"] * 40, 0.03

    async def consume() -> None:
        async for _ in backend.generate(request(messages=True)):
            pass

    task = asyncio.create_task(consume())
    await _until(lambda: tgi.produced >= 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _until(lambda: tgi.active == 0)
    assert tgi.produced < 25  # of 40


async def test_server_down_is_backend_unavailable() -> None:
    server = ServerThread(FakeTgi().app())
    url = f"http://127.0.0.1:{server.start()}"
    server.stop()  # a port that was just free: connections are refused
    backend = TgiBackend(url, timeout_s=2)
    try:
        with pytest.raises(BackendUnavailable, match="unreachable"):
            await backend.start()
        assert not await backend.check_health()
        with pytest.raises(BackendUnavailable):
            await collect(backend, request())
        with pytest.raises(BackendUnavailable):
            await backend.count_tokens(GenerationInput(prompt=PROMPT))
    finally:
        await backend.aclose()


async def _until(condition: Callable[[], bool], timeout_s: float = 2.0) -> None:
    """Wait until condition() holds (the fake server runs in another thread)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_the_llm_service_settings_configure_the_tgi_backend(tgi: FakeTgi) -> None:
    from llm_service.backends.factory import make_backend
    from llm_service.settings import Settings

    backend = make_backend(Settings(backend="tgi", tgi_url=tgi.url, tgi_token="hf_secret", tgi_timeout_s=5))
    assert isinstance(backend, TgiBackend)
    await backend.start()
    try:
        await collect(backend, request(max_new_tokens=3))
    finally:
        await backend.aclose()
    assert tgi.headers[-1]["authorization"] == "Bearer hf_secret"
    assert "hf_secret" not in repr(Settings(tgi_token="hf_secret"))
