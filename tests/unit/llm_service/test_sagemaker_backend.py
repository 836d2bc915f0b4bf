"""SageMakerBackend (real boto3) against a loopback endpoint in AWS event-stream framing (fake_sagemaker.py)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path

import boto3
import pytest
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace

from llm_service.backends.base import Backend
from llm_service.backends.factory import make_backend
from llm_service.backends.sagemaker import SageMakerBackend
from llm_service.backends.sagemaker_stream import SseLines, StreamPump
from llm_service.deploy.config import DeploySettings
from llm_service.deploy.plan import container_env
from llm_service.errors import BackendError, BackendUnavailable, InvalidArgument, Overloaded
from llm_service.generation import Generator
from llm_service.settings import Settings
from llm_service.types import (
    Completion,
    FinishReason,
    GenerationInput,
    Message,
    Parameters,
    Request,
    Token,
)
from servekit.admission import Admission
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


async def test_start_reads_the_region_and_the_deployed_limits(backend: SageMakerBackend) -> None:
    assert isinstance(backend, Backend)
    info = backend.info()
    assert (info.model_id, info.backend) == (ENDPOINT, "sagemaker")
    assert (info.max_input_tokens, info.max_total_tokens) == (1024, 2048)  # the fake container's env
    assert backend.region == "eu-central-1"
    assert backend.limits_from == f"deployed model {ENDPOINT}-model"
    assert await backend.check_health()


SERVING = ["InService", "Updating", "SystemUpdating", "RollingBack", "UpdateRollbackFailed"]
NOT_SERVING = ["Creating", "OutOfService", "Deleting", "Failed"]


@pytest.mark.parametrize("status", SERVING)
async def test_an_endpoint_that_serves_is_healthy_and_starts(sagemaker: FakeSageMaker, status: str) -> None:
    """During `deploy up`'s UpdateEndpoint (blue/green) the old fleet serves: pods stay and become ready."""
    sagemaker.endpoint_status = status
    b = SageMakerBackend(ENDPOINT, endpoint_url=sagemaker.url, session=session(), status_ttl_s=0)
    await b.start()  # a pod (re)starting during the update
    try:
        assert await b.check_health()
        tokens, _ = await collect(b, request(max_new_tokens=2))
        assert [t.text for t in tokens] == ["Hello", ","]
    finally:
        await b.aclose()


@pytest.mark.parametrize("status", NOT_SERVING)
async def test_an_endpoint_that_does_not_serve_is_unhealthy(sagemaker: FakeSageMaker, status: str) -> None:
    b = SageMakerBackend(ENDPOINT, endpoint_url=sagemaker.url, session=session(), status_ttl_s=0)
    await b.start()
    try:
        assert await b.check_health()
        sagemaker.endpoint_status = status
        assert not await b.check_health()
    finally:
        await b.aclose()
    with pytest.raises(BackendUnavailable, match=f"is {status}: it does not serve"):
        await SageMakerBackend(ENDPOINT, endpoint_url=sagemaker.url, session=session()).start()


@pytest.mark.parametrize(
    ("endpoint", "component", "serving"),
    [
        ("InService", "Updating", True),  # UpdateInferenceComponent: the current copies serve
        ("Updating", "InService", True),
        ("InService", "Creating", False),
        ("InService", "Failed", False),
        ("Creating", "InService", False),
    ],
)
async def test_health_follows_the_inference_component_too(
    sagemaker: FakeSageMaker, endpoint: str, component: str, serving: bool
) -> None:
    b = SageMakerBackend(
        ENDPOINT, inference_component_name="twin-ic", endpoint_url=sagemaker.url, session=session(), status_ttl_s=0
    )
    await b.start()
    try:
        sagemaker.endpoint_status, sagemaker.component_status = endpoint, component
        assert await b.check_health() is serving
    finally:
        await b.aclose()


async def test_health_checks_reuse_one_describe_endpoint_within_the_ttl(sagemaker: FakeSageMaker) -> None:
    b = SageMakerBackend(ENDPOINT, endpoint_url=sagemaker.url, session=session(), status_ttl_s=3600)
    await b.start()
    try:
        before = sagemaker.control_calls["DescribeEndpoint"]
        for _ in range(5):
            assert await b.check_health()
        assert all(await asyncio.gather(*(b.check_health() for _ in range(20))))
        assert sagemaker.control_calls["DescribeEndpoint"] == before  # start's answer still serves
        sagemaker.endpoint_status = "Failed"
        assert await b.check_health()  # not asked again within the TTL
    finally:
        await b.aclose()


async def test_concurrent_health_checks_share_one_describe_endpoint(sagemaker: FakeSageMaker) -> None:
    b = SageMakerBackend(ENDPOINT, endpoint_url=sagemaker.url, session=session(), status_ttl_s=0)
    await b.start()
    try:
        before = sagemaker.control_calls["DescribeEndpoint"]
        assert all(await asyncio.gather(*(b.check_health() for _ in range(20))))
        assert sagemaker.control_calls["DescribeEndpoint"] == before + 1
        for _ in range(3):  # a TTL of 0: each check after the last answer asks again
            assert await b.check_health()
        assert sagemaker.control_calls["DescribeEndpoint"] == before + 4
    finally:
        await b.aclose()


async def test_throttled_describe_keeps_the_last_status(sagemaker: FakeSageMaker) -> None:
    b = SageMakerBackend(ENDPOINT, endpoint_url=sagemaker.url, session=session(), status_ttl_s=0, max_attempts=1)
    await b.start()
    try:
        sagemaker.control_errors["DescribeEndpoint"] = "ThrottlingException"
        assert await b.check_health()  # every replica polls one account-wide API: a throttle is no outage
        sagemaker.control_errors["DescribeEndpoint"] = "AccessDeniedException"
        assert not await b.check_health()
    finally:
        await b.aclose()


@pytest.mark.parametrize("component", [None, "twin-ic"])
async def test_limits_are_the_ones_the_endpoint_was_deployed_with(
    sagemaker: FakeSageMaker, component: str | None
) -> None:
    """The a100-30b profile deploys 4096 / 8192 tokens: the service enforces those, not the 2048 / 4096 default."""
    sagemaker.container_env = container_env(DeploySettings(profile="a100-30b"))
    b = SageMakerBackend(ENDPOINT, inference_component_name=component, endpoint_url=sagemaker.url, session=session())
    await b.start()
    try:
        info = b.info()
        assert (info.max_input_tokens, info.max_total_tokens) == (4096, 8192)
        model = f"{component}-model" if component else f"{ENDPOINT}-model"
        assert b.limits_from == f"deployed model {model}"
        assert sagemaker.control_calls["DescribeModel"] == 1
        if component is None:
            assert sagemaker.control_calls["DescribeEndpointConfig"] == 1

        generator = Generator(b, Admission(1))
        prompt = GenerationInput(prompt="x" * 4 * 3000)  # 3000 tokens by the estimate: over 2048, under 4096
        assert await generator.check_limits(Request(prompt, Parameters(max_new_tokens=1000), "r")) == 3000
        with pytest.raises(InvalidArgument, match="total limit of 8192"):
            await generator.check_limits(Request(prompt, Parameters(max_new_tokens=6000), "r"))
    finally:
        await b.aclose()


async def test_explicit_limits_override_the_deployed_ones(sagemaker: FakeSageMaker) -> None:
    sagemaker.container_env = container_env(DeploySettings(profile="a100-30b"))
    b = SageMakerBackend(ENDPOINT, endpoint_url=sagemaker.url, session=session(), max_input_tokens=3000)
    await b.start()
    try:
        assert (b.info().max_input_tokens, b.info().max_total_tokens) == (3000, 8192)
    finally:
        await b.aclose()

    both = SageMakerBackend(
        ENDPOINT, endpoint_url=sagemaker.url, session=session(), max_input_tokens=1000, max_total_tokens=1500
    )
    before = sagemaker.control_calls["DescribeModel"]
    await both.start()
    try:
        assert (both.info().max_input_tokens, both.info().max_total_tokens) == (1000, 1500)
        assert sagemaker.control_calls["DescribeModel"] == before  # nothing to read
    finally:
        await both.aclose()


@pytest.mark.parametrize("missing", ["denied", "not in the env"])
async def test_limits_fall_back_to_the_settings(sagemaker: FakeSageMaker, missing: str) -> None:
    if missing == "denied":
        sagemaker.control_errors["DescribeModel"] = "AccessDeniedException"
    else:
        sagemaker.container_env = {"HF_MODEL_ID": "mlabonne/TwinLlama-3.1-8B-DPO"}
    b = SageMakerBackend(
        ENDPOINT,
        endpoint_url=sagemaker.url,
        session=session(),
        fallback_max_input_tokens=1500,
        fallback_max_total_tokens=3000,
        max_attempts=1,
    )
    await b.start()  # a missing permission does not keep the service from serving
    try:
        assert (b.info().max_input_tokens, b.info().max_total_tokens) == (1500, 3000)
        reason = "deployment not readable" if missing == "denied" else f"deployed model {ENDPOINT}-model sets no limits"
        assert b.limits_from == f"settings ({reason})"
        assert await b.check_health()
    finally:
        await b.aclose()


async def test_the_llm_service_settings_configure_limits_and_status_caching(
    sagemaker: FakeSageMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")  # boto3's own credential chain, as in production
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    sagemaker.container_env = container_env(DeploySettings(profile="a100-30b"))
    settings = Settings(
        backend="sagemaker",
        sagemaker_endpoint_name=ENDPOINT,
        sagemaker_endpoint_url=sagemaker.url,
        sagemaker_region="eu-central-1",
        sagemaker_max_total_tokens=6000,
        sagemaker_status_ttl_s=3600,
    )
    backend = make_backend(settings)
    await backend.start()
    try:
        assert (backend.info().max_input_tokens, backend.info().max_total_tokens) == (4096, 6000)
        calls = sagemaker.control_calls["DescribeEndpoint"]
        for _ in range(3):
            assert await backend.check_health()
        assert sagemaker.control_calls["DescribeEndpoint"] == calls
    finally:
        await backend.aclose()


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

    assert [t.text for t in tokens] == ["Hello", ",", " "]  # the stop sequence is not in the output
    prompt_tokens = len(fake_tokenize(fake_chat_template([{"role": m.role, "content": m.content} for m in MESSAGES])))
    assert completion == Completion(FinishReason.STOP_SEQUENCE, prompt_tokens, 3, "Hello, ")
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
    await stream.aclose()

    await _until(lambda: sagemaker.model.active == 0 and not _stream_threads())
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


async def test_a_slow_consumer_holds_the_stream_at_the_buffer_bound(sagemaker: FakeSageMaker) -> None:
    sagemaker.model.tokens, sagemaker.part_size = ["tok"] * 20, 16  # ~150 parts, sent as fast as TCP takes them
    client = session().client("sagemaker-runtime", endpoint_url=sagemaker.url)
    call = {"EndpointName": ENDPOINT, "Body": '{"inputs": "x", "stream": true}', "ContentType": "application/json"}
    pump = StreamPump(client, call, ENDPOINT, name="sagemaker-stream-bound", max_buffered=4)
    parts: list[bytes] = []
    buffered: list[int] = []
    try:
        async for part in pump.parts():
            buffered.append(pump.buffered)
            parts.append(part)
            await asyncio.sleep(0.002)  # slow: the worker thread could run far ahead
    finally:
        pump.close()
        client.close()
    assert max(buffered) <= 4 and pump.high_water == 4  # the bound was reached, never passed
    assert len(parts) == sagemaker.parts_sent > 100
    events = SseLines().feed(b"".join(parts))
    assert [json.loads(e)["token"]["text"] for e in events] == ["tok"] * 20 + ["</s>"]


async def test_close_wakes_a_worker_waiting_for_room(sagemaker: FakeSageMaker) -> None:
    sagemaker.model.tokens, sagemaker.part_size = ["tok"] * 200, 8
    client = session().client("sagemaker-runtime", endpoint_url=sagemaker.url)
    call = {"EndpointName": ENDPOINT, "Body": '{"inputs": "x", "stream": true}', "ContentType": "application/json"}
    pump = StreamPump(client, call, ENDPOINT, name="sagemaker-stream-room", max_buffered=2)
    try:
        parts = pump.parts()
        await anext(parts)
        await _until(lambda: pump.buffered == 2)  # full: the worker waits for room
        pump.close()
        await _until(lambda: not _stream_threads() and sagemaker.model.active == 0)
    finally:
        client.close()
    assert sagemaker.model.produced < 200


def _stream_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("sagemaker-stream-")]


async def _until(condition: Callable[[], bool], timeout_s: float = 2.0) -> None:
    """Wait until condition() holds (the fake server and the stream worker run in other threads)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


# -- the vLLM container: OpenAI payloads ----------------------------------------------------------------------


@pytest.fixture
async def vllm(sagemaker: FakeSageMaker) -> AsyncIterator[SageMakerBackend]:
    """A backend on an endpoint running the vLLM DLC (payload "openai")."""
    sagemaker.use_openai()
    b = SageMakerBackend(
        ENDPOINT, payload="openai", endpoint_url=sagemaker.url, session=session(), timeout_s=5, max_attempts=1
    )
    await b.start()
    yield b
    await b.aclose()


async def test_openai_chat_body_and_chunks_reassembled_across_parts(
    vllm: SageMakerBackend, sagemaker: FakeSageMaker
) -> None:
    sagemaker.part_size = 7  # cuts "data: ", the JSON and "ö" anywhere
    stops = ("xy", "zz", "qq", "#", "!")  # five: vLLM has no limit of four, so all of them are sent
    tokens, completion = await collect(
        vllm,
        request(messages=True, temperature=0.5, top_k=20, repetition_penalty=1.2, stop_sequences=stops, seed=7),
    )

    assert [t.text for t in tokens] == ["Hello", ",", " wörld"]  # the stop sequence cut, as for every backend
    assert (completion.finish_reason, completion.text, completion.completion_tokens) == (
        FinishReason.STOP_SEQUENCE,
        "Hello, wörld",
        4,
    )
    sent = sagemaker.invocations[-1]
    assert sent["headers"]["x-amzn-sagemaker-custom-attributes"] == "route=/v1/chat/completions"
    assert sent["body"] == {
        "messages": [{"role": m.role, "content": m.content} for m in MESSAGES],
        "max_tokens": 256,
        "temperature": 0.5,
        "top_k": 20,
        "repetition_penalty": 1.2,
        "seed": 7,
        "stop": list(stops),
        "include_stop_str_in_output": True,  # kept, so the finish reason knows it was a stop sequence
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def test_openai_completion_for_a_prompt(vllm: SageMakerBackend, sagemaker: FakeSageMaker) -> None:
    sagemaker.part_size = 3
    tokens, completion = await collect(vllm, request(temperature=0.0, max_new_tokens=3, return_logprobs=True))

    assert [(t.text, t.logprob) for t in tokens] == [("Hello", -0.25), (",", -0.5), (" wörld", -0.75)]
    assert completion == Completion(FinishReason.LENGTH, len(fake_tokenize(PROMPT)), 3, "Hello, wörld")
    sent = sagemaker.invocations[-1]
    assert sent["headers"]["x-amzn-sagemaker-custom-attributes"] == "route=/v1/completions"
    assert sent["body"] == {
        "prompt": PROMPT,
        "max_tokens": 3,
        "temperature": 0.0,
        "logprobs": 1,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    # The model ends by itself: vLLM streams no EOS text, and says "stop" with no stop sequence asked.
    _, completion = await collect(vllm, request())
    assert (completion.finish_reason, completion.completion_tokens) == (FinishReason.END_OF_SEQUENCE, 5)


async def test_openai_errors_map_mid_stream_and_before(vllm: SageMakerBackend, sagemaker: FakeSageMaker) -> None:
    sagemaker.model.error_after = 2
    got: list[str] = []
    with pytest.raises(BackendError, match="CUDA out of memory"):
        async for item in vllm.generate(request(messages=True)):
            got.append(item.text)  # type: ignore[union-attr]
    assert got == ["Hello", ","]

    sagemaker.model.error_after = None
    sagemaker.stream_error_after = 1  # SageMaker's own ModelStreamError: mapped as with TGI
    with pytest.raises(BackendError, match=r"ModelStreamError.*timed out"):
        await collect(vllm, request())

    sagemaker.stream_error_after = None
    body = {"object": "error", "message": "max_tokens must be at least 1", "type": "BadRequestError", "code": 400}
    sagemaker.model_error = (400, json.dumps(body))
    with pytest.raises(InvalidArgument) as info:
        await collect(vllm, request())
    assert info.value.violations == [("parameters", "max_tokens must be at least 1")]


async def test_a_tgi_body_is_refused_by_the_vllm_container(sagemaker: FakeSageMaker) -> None:
    """The payload setting must match the container: the fake vLLM refuses TGI's body as vLLM does."""
    sagemaker.use_openai()
    b = SageMakerBackend(ENDPOINT, endpoint_url=sagemaker.url, session=session())  # payload "tgi" by default
    await b.start()
    try:
        with pytest.raises(InvalidArgument, match="unknown request shape"):
            await collect(b, request())
    finally:
        await b.aclose()


async def test_vllm_max_model_len_is_the_deployed_limit(sagemaker: FakeSageMaker) -> None:
    """SM_VLLM_MAX_MODEL_LEN (or LMI's OPTION_MAX_MODEL_LEN) is the total; a prompt may take all but one."""
    for env in (
        container_env(DeploySettings(profile="a10g-8b", container="vllm")),
        {"HF_MODEL_ID": "m", "OPTION_MAX_MODEL_LEN": "4096"},
    ):
        sagemaker.container_env = env
        b = SageMakerBackend(ENDPOINT, payload="openai", endpoint_url=sagemaker.url, session=session())
        await b.start()
        try:
            assert (b.info().max_input_tokens, b.info().max_total_tokens) == (4095, 4096)
            assert b.limits_from == f"deployed model {ENDPOINT}-model"
        finally:
            await b.aclose()


# -- adapters: inference components on the base one ----------------------------------------------------------


@pytest.mark.parametrize("payload", ["tgi", "openai"])
async def test_an_adapter_invokes_its_inference_component(sagemaker: FakeSageMaker, payload: str) -> None:
    if payload == "openai":
        sagemaker.use_openai()
    b = SageMakerBackend(
        ENDPOINT,
        inference_component_name="llmtwin-ic",
        payload=payload,  # type: ignore[arg-type]
        adapters={"twin-dpo": "llmtwin-ic-twin-dpo", "style": "llmtwin-ic-style"},
        endpoint_url=sagemaker.url,
        session=session(),
    )
    await b.start()
    try:
        assert b.info().adapters == ("twin-dpo", "style")
        await collect(b, replace(request(max_new_tokens=1), adapter="twin-dpo"))
        assert sagemaker.invocations[-1]["headers"]["x-amzn-sagemaker-inference-component"] == "llmtwin-ic-twin-dpo"
        await collect(b, request(messages=True, max_new_tokens=1))  # no adapter: the base component
        assert sagemaker.invocations[-1]["headers"]["x-amzn-sagemaker-inference-component"] == "llmtwin-ic"
        calls = len(sagemaker.invocations)
        with pytest.raises(InvalidArgument, match="unknown adapter 'nope' \\(served: twin-dpo, style\\)"):
            await collect(b, replace(request(), adapter="nope"))
        assert len(sagemaker.invocations) == calls  # refused before any call
    finally:
        await b.aclose()


async def test_the_llm_service_settings_choose_payload_and_adapters(
    sagemaker: FakeSageMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("LLM_SAGEMAKER_PAYLOAD", "openai")
    monkeypatch.setenv("LLM_SAGEMAKER_ADAPTERS", "twin-dpo=llmtwin-ic-twin-dpo, style = llmtwin-ic-style")
    sagemaker.use_openai()
    settings = Settings(
        backend="sagemaker",
        sagemaker_endpoint_name=ENDPOINT,
        sagemaker_inference_component="llmtwin-ic",
        sagemaker_endpoint_url=sagemaker.url,
        sagemaker_region="eu-central-1",
    )
    backend = make_backend(settings)
    await backend.start()
    try:
        assert backend.info().adapters == ("twin-dpo", "style")
        await collect(backend, replace(request(messages=True, max_new_tokens=1), adapter="style"))  # type: ignore[arg-type]
        sent = sagemaker.invocations[-1]
        assert sent["headers"]["x-amzn-sagemaker-inference-component"] == "llmtwin-ic-style"
        assert "messages" in sent["body"]
    finally:
        await backend.aclose()
    with pytest.raises(ValueError, match="name=component"):
        make_backend(settings.model_copy(update={"sagemaker_adapters": "a=b,a=c"}))
