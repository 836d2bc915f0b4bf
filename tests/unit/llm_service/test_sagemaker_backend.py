"""SageMakerBackend (real boto3) against a loopback endpoint in AWS event-stream framing (fake_sagemaker.py)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from pathlib import Path

import boto3
import pytest
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace

from llm_service.backends.base import Backend
from llm_service.backends.sagemaker import SageMakerBackend, SseLines
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
from tests.support.fake_sagemaker import FakeSageMaker
from tests.support.fake_tgi import ServerThread, fake_chat_template, fake_tokenize

ENDPOINT = "twin-endpoint"
PROMPT = "Write about RAG"
MESSAGES = (Message("system", "You are a twin."), Message("user", "Write about RAG"))


_SESSION = boto3.session.Session(aws_access_key_id="test", aws_secret_access_key="test", region_name="eu-central-1")


def session() -> boto3.session.Session:
    """Fake credentials, no environment or profile involved; one session caches the service models."""
    return _SESSION


@pytest.fixture(scope="module")
def sagemaker_server() -> Iterator[FakeSageMaker]:
    fake = FakeSageMaker()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def sagemaker(sagemaker_server: FakeSageMaker) -> FakeSageMaker:
    sagemaker_server.reset()
    return sagemaker_server


@pytest.fixture
async def backend(sagemaker: FakeSageMaker) -> AsyncIterator[SageMakerBackend]:
    b = SageMakerBackend(ENDPOINT, endpoint_url=sagemaker.url, session=session(), timeout_s=5, max_attempts=1)
    await b.start()
    yield b
    await b.aclose()


def request(*, messages: bool = False, **params: object) -> Request:
    input = GenerationInput(messages=MESSAGES) if messages else GenerationInput(prompt=PROMPT)
    return Request(input, Parameters(**params), "req-1")  # type: ignore[arg-type]


async def collect(backend: SageMakerBackend, req: Request) -> tuple[list[Token], Completion]:
    items = [item async for item in backend.generate(req)]
    assert all(isinstance(i, Token) for i in items[:-1])
    assert isinstance(items[-1], Completion)
    return items[:-1], items[-1]  # type: ignore[return-value]


async def test_start_checks_the_endpoint_is_in_service(backend: SageMakerBackend, sagemaker: FakeSageMaker) -> None:
    assert isinstance(backend, Backend)
    info = backend.info()
    assert (info.model_id, info.backend, info.max_input_tokens) == (ENDPOINT, "sagemaker", 2048)
    assert info.extra["region"] == "eu-central-1"
    assert await backend.check_health()

    sagemaker.endpoint_status = "Updating"
    assert not await backend.check_health()
    with pytest.raises(BackendUnavailable, match="Updating"):
        await SageMakerBackend(ENDPOINT, endpoint_url=sagemaker.url, session=session()).start()


async def test_prompt_streams_tokens_then_one_completion(backend: SageMakerBackend, sagemaker: FakeSageMaker) -> None:
    tokens, completion = await collect(backend, request(temperature=0.5, top_p=0.9, seed=3))

    assert [t.text for t in tokens] == ["Hello", ",", " wörld", "!"]
    assert [t.token_id for t in tokens] == [100, 101, 102, 103]
    assert completion == Completion(FinishReason.END_OF_SEQUENCE, len(fake_tokenize(PROMPT)), 5, "Hello, wörld!")
    sent = sagemaker.invocations[-1]
    assert sent["endpoint"] == ENDPOINT
    assert sent["headers"]["content-type"] == "application/json"
    assert "x-amzn-sagemaker-inference-component" not in sent["headers"]
    assert sent["body"]["inputs"] == PROMPT and sent["body"]["stream"] is True
    params = sent["body"]["parameters"]
    assert (params["do_sample"], params["temperature"], params["top_p"], params["seed"]) == (True, 0.5, 0.9, 3)
    assert params["details"] is True


async def test_inference_component_is_named_in_the_call(sagemaker: FakeSageMaker) -> None:
    b = SageMakerBackend(ENDPOINT, inference_component_name="twin-ic", endpoint_url=sagemaker.url, session=session())
    await b.start()
    try:
        await collect(b, request(max_new_tokens=1))
    finally:
        await b.aclose()
    assert sagemaker.invocations[-1]["headers"]["x-amzn-sagemaker-inference-component"] == "twin-ic"


async def test_lines_split_anywhere_across_payload_parts(backend: SageMakerBackend, sagemaker: FakeSageMaker) -> None:
    sagemaker.part_size = 5  # cuts JSON, "data:" prefixes and the two-byte "ö" alike
    tokens, completion = await collect(backend, request(max_new_tokens=3))
    assert "".join(t.text for t in tokens) == completion.text == "Hello, wörld"
    assert completion.finish_reason == FinishReason.LENGTH
    assert sagemaker.parts_sent > 20


def test_sse_lines_reassemble_bytes_cut_in_a_utf8_character() -> None:
    stream = 'data:{"t": "wö"}\n\ndata: [DONE]\n\n'.encode()
    lines = SseLines()
    cut = stream.index("ö".encode()) + 1
    assert lines.feed(stream[:cut]) == []
    assert lines.feed(stream[cut:]) == ['{"t": "wö"}', "[DONE]"]


async def test_chat_messages_stream_with_usage(backend: SageMakerBackend, sagemaker: FakeSageMaker) -> None:
    tokens, completion = await collect(backend, request(messages=True, stop_sequences=("wörld",)))

    assert [t.text for t in tokens] == ["Hello", ",", " wörld"]
    prompt_tokens = len(fake_tokenize(fake_chat_template([{"role": m.role, "content": m.content} for m in MESSAGES])))
    assert completion == Completion(FinishReason.STOP_SEQUENCE, prompt_tokens, 3, "Hello, wörld")
    body = sagemaker.invocations[-1]["body"]
    assert body["messages"][0] == {"role": "system", "content": "You are a twin."}
    assert (body["stream"], body["stream_options"], body["stop"]) == (True, {"include_usage": True}, ["wörld"])


async def test_repetition_controls_reach_the_container(backend: SageMakerBackend, sagemaker: FakeSageMaker) -> None:
    penalties = {"repetition_penalty": 1.2, "frequency_penalty": 0.5, "presence_penalty": 0.3}
    await collect(backend, request(temperature=0.2, **penalties))
    parameters = sagemaker.invocations[-1]["body"]["parameters"]
    assert (parameters["repetition_penalty"], parameters["frequency_penalty"]) == (1.2, 0.5)
    await collect(backend, request(messages=True, temperature=0.2, **penalties))
    body = sagemaker.invocations[-1]["body"]
    assert (body["frequency_penalty"], body["presence_penalty"]) == (0.5, 0.3)


@pytest.mark.parametrize("exception", ["ModelStreamError", "InternalStreamFailure"])
async def test_stream_exception_mid_stream_is_backend_error(
    backend: SageMakerBackend, sagemaker: FakeSageMaker, exception: str
) -> None:
    sagemaker.stream_error_after, sagemaker.stream_error = 2, exception
    got: list[str] = []
    with pytest.raises(BackendError, match=f"{exception}.*timed out"):
        async for item in backend.generate(request()):
            got.append(item.text)  # type: ignore[union-attr]
    assert got == ["Hello", ","]


async def test_tgi_error_event_inside_the_stream(backend: SageMakerBackend, sagemaker: FakeSageMaker) -> None:
    sagemaker.model.error_after = 1
    with pytest.raises(BackendError, match="CUDA out of memory"):
        await collect(backend, request())
    sagemaker.model.error_type = "overloaded"
    with pytest.raises(Overloaded):
        await collect(backend, request(messages=True))


async def test_container_errors_map_by_their_original_status(
    backend: SageMakerBackend, sagemaker: FakeSageMaker
) -> None:
    sagemaker.model_error = (422, '{"error":"`top_p` must be > 0.0 and < 1.0","error_type":"validation"}')
    with pytest.raises(InvalidArgument) as info:
        await collect(backend, request())
    assert info.value.violations == [("parameters", "`top_p` must be > 0.0 and < 1.0")]

    sagemaker.model_error = (429, '{"error":"Model is overloaded","error_type":"overloaded"}')
    with pytest.raises(Overloaded):
        await collect(backend, request())


async def test_missing_endpoint_is_backend_unavailable(sagemaker: FakeSageMaker) -> None:
    b = SageMakerBackend("no-such-endpoint", endpoint_url=sagemaker.url, session=session())
    with pytest.raises(BackendUnavailable, match="not found"):
        await b.start()
    assert not await b.check_health()

    unchecked = SageMakerBackend(
        "no-such-endpoint", endpoint_url=sagemaker.url, session=session(), check_endpoint_status=False
    )
    await unchecked.start()
    try:
        assert await unchecked.check_health()
        with pytest.raises(BackendUnavailable, match=r"no-such-endpoint.*not found"):
            await collect(unchecked, request())
    finally:
        await unchecked.aclose()


async def test_slow_tokens_arrive_as_they_are_produced(backend: SageMakerBackend, sagemaker: FakeSageMaker) -> None:
    sagemaker.model.token_delay_s = 0.05
    produced_when_received = []
    async for _ in backend.generate(request()):
        produced_when_received.append(sagemaker.model.produced)
    assert produced_when_received[0] == 1  # the first token came before the second was produced
    assert produced_when_received[-1] == 5


async def test_cancel_closes_the_stream_and_the_worker(backend: SageMakerBackend, sagemaker: FakeSageMaker) -> None:
    sagemaker.model.tokens, sagemaker.model.token_delay_s = ["tok"] * 40, 1.0  # the worker blocks 1 s a read
    stream = backend.generate(request())
    assert isinstance(stream, AsyncGenerator)  # closable, as the servicer closes it
    await anext(stream)
    started = asyncio.get_running_loop().time()
    await stream.aclose()

    await _until(lambda: sagemaker.model.active == 0 and not _stream_threads())
    assert asyncio.get_running_loop().time() - started < 0.8  # it did not wait for the next part
    stopped_at = sagemaker.model.produced
    await asyncio.sleep(0.1)
    assert sagemaker.model.produced == stopped_at < 3


async def test_cancelled_consumer_task_stops_the_endpoint(backend: SageMakerBackend, sagemaker: FakeSageMaker) -> None:
    sagemaker.model.tokens, sagemaker.model.token_delay_s = ["tok"] * 40, 0.03

    async def consume() -> None:
        async for _ in backend.generate(request(messages=True)):
            pass

    task = asyncio.create_task(consume())
    await _until(lambda: sagemaker.model.produced >= 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _until(lambda: sagemaker.model.active == 0 and not _stream_threads())
    assert sagemaker.model.produced < 25  # of 40


async def test_endpoint_down_is_backend_unavailable() -> None:
    server = ServerThread(FakeSageMaker().app())
    url = f"http://127.0.0.1:{server.start()}"
    server.stop()  # a port that was just free: connections are refused
    b = SageMakerBackend(ENDPOINT, endpoint_url=url, session=session(), timeout_s=2, max_attempts=1)
    with pytest.raises(BackendUnavailable, match="unreachable"):
        await b.start()
    assert not await b.check_health()

    unchecked = SageMakerBackend(
        ENDPOINT, endpoint_url=url, session=session(), check_endpoint_status=False, max_attempts=1
    )
    await unchecked.start()
    try:
        with pytest.raises(BackendUnavailable, match="unreachable"):
            await collect(unchecked, request())
    finally:
        await unchecked.aclose()


async def test_count_tokens_with_a_tokenizer_file_or_an_estimate(sagemaker: FakeSageMaker, tmp_path: Path) -> None:
    vocab = {"[UNK]": 0, "write": 1, "about": 2, "rag": 3}
    tokenizer = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = Whitespace()
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    b = SageMakerBackend(
        ENDPOINT,
        endpoint_url=sagemaker.url,
        session=session(),
        tokenizer_path=str(tmp_path / "tokenizer.json"),
        check_endpoint_status=False,
    )
    await b.start()
    try:
        assert await b.count_tokens(GenerationInput(prompt="write about rag")) == 3
        assert await b.count_tokens(GenerationInput(messages=(Message("user", "write about rag"),))) == 5
    finally:
        await b.aclose()
    no_tokenizer = SageMakerBackend(ENDPOINT, session=session())  # SageMaker has no tokenize route
    assert await no_tokenizer.count_tokens(GenerationInput(prompt="x" * 10)) == 3


def _stream_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("sagemaker-stream-")]


async def _until(condition: Callable[[], bool], timeout_s: float = 2.0) -> None:
    """Wait until condition() holds (the fake server and the stream worker run in other threads)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)
