"""One contract, every backend: what the LLM contract (llm_service.proto) promises, checked on each backend.

Stop sequences are cut from the output (also when one is split across tokens or ends inside one), finish
reasons, usage counts, limits, cancellation and errors. The backends run for real: embedded (llama.cpp
with the packaged model), echo, TGI through huggingface_hub against fake_tgi, SageMaker through boto3
against fake_sagemaker, OpenAI-compatible through the openai SDK against llama.cpp's own HTTP server
("openai") and against fake_vllm ("openai-vllm"). Expected texts come from each backend's own greedy
output, so one test fits all.

To add a backend, write a `@harness("name")` builder below: it yields a started backend and the hooks
the tests need (what the model produced, whether it is idle, how to make it fail).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit

from llm_service.backends.base import Backend
from llm_service.backends.echo import EchoBackend
from llm_service.backends.embedded import EmbeddedBackend, packaged_model_path
from llm_service.backends.openai import OpenAIBackend
from llm_service.backends.sagemaker import SageMakerBackend
from llm_service.backends.sagemaker_payload import PayloadKind
from llm_service.backends.tgi import TgiBackend
from llm_service.errors import BackendError, BackendUnavailable, InvalidArgument
from llm_service.generation import Generator
from llm_service.types import Completion, FinishReason, GenerationInput, Message, Parameters, Request, Token
from servekit.admission import Admission
from tests.support.fake_sagemaker import FakeSageMaker
from tests.support.fake_tgi import FakeTgi, ServerThread
from tests.support.fake_vllm import FakeVllm
from tests.support.llama_server import LlamaServer

PROMPT = "Count slowly: one, two, three, four, five, six, seven, eight, nine, ten."
MESSAGES = (Message("system", "You are a patient teacher."), Message("user", "Describe the sea in one long sentence."))
INPUTS = {"prompt": GenerationInput(prompt=PROMPT), "messages": GenerationInput(messages=MESSAGES)}
ENDPOINT = "twin-endpoint"


@dataclass
class Harness:
    """A started backend and what the contract tests need to observe and steer it."""

    backend: Backend
    name: str  # ModelInfo.backend
    limits: tuple[int, int]  # (max input, max total) tokens the backend must report
    produced: Callable[[], int]  # tokens the model produced so far
    idle: Callable[[], bool]  # no generation runs in the model any more
    long: Callable[[int], Request]  # a request for n tokens that the model would really generate, slowly enough
    unavailable: Callable[[], Backend] | None  # a backend of this kind that cannot serve
    fail_after: Callable[[int], None] | None = None  # the next generation fails after n tokens
    ends_by_itself: Request | None = None  # a request the model ends with its end-of-sequence token
    exact_chat_count: bool = True  # count_tokens(messages) is the prompt_tokens the backend reports


@dataclass
class Fakes:
    """The loopback servers the remote backends talk to."""

    tgi: FakeTgi
    sagemaker: FakeSageMaker
    tmp: Path
    vllm: FakeVllm
    llama: LlamaServer  # llama.cpp's real HTTP server (xllamacpp), the packaged model


HarnessFactory = Callable[[Fakes], AbstractAsyncContextManager[Harness]]
HARNESSES: dict[str, HarnessFactory] = {}


def harness(name: str) -> Callable[[Callable[[Fakes], AsyncIterator[Harness]]], HarnessFactory]:
    """Registers a harness builder (an async generator yielding one Harness) under `name`."""

    def register(builder: Callable[[Fakes], AsyncIterator[Harness]]) -> HarnessFactory:
        factory = asynccontextmanager(builder)
        HARNESSES[name] = factory
        return factory

    return register


def greedy(input: GenerationInput, **params: object) -> Request:
    return Request(input, Parameters(**{"temperature": 0.0, **params}), "contract")  # type: ignore[arg-type]


@harness("echo")
async def _echo(fakes: Fakes) -> AsyncIterator[Harness]:
    backend = EchoBackend()
    await backend.start()

    def fail_after(n: int) -> None:
        backend.fail_after = n

    yield Harness(
        backend,
        "echo",
        (1536, 2048),
        produced=lambda: backend.produced,
        idle=lambda: True,  # it generates inside the iterator: closed, it has stopped
        long=lambda n: greedy(INPUTS["prompt"], max_new_tokens=n),
        unavailable=None,  # always available
        fail_after=fail_after,
    )
    await backend.aclose()


@harness("embedded")
async def _embedded(fakes: Fakes) -> AsyncIterator[Harness]:
    backend = EmbeddedBackend(packaged_model_path(), n_parallel=2, n_threads=1)
    await backend.start()
    yield Harness(
        backend,
        "embedded",
        (1536, 2048),
        produced=lambda: backend.produced,
        idle=lambda: True,  # closing the iterator waits for llama.cpp's worker to return
        long=lambda n: greedy(GenerationInput(prompt="Once upon a time, in a land far away,"), max_new_tokens=n),
        unavailable=lambda: EmbeddedBackend(fakes.tmp / "missing.gguf"),
        ends_by_itself=greedy(GenerationInput(messages=(Message("user", "Say just: yes"),)), max_new_tokens=64),
    )
    await backend.aclose()


def _slow_fake_model(model: FakeTgi, n: int) -> None:
    model.tokens, model.token_delay_s = ["tok"] * n, 0.01


def _fake_model_fails(model: FakeTgi, n: int) -> None:
    model.error_after = n


@harness("tgi")
async def _tgi(fakes: Fakes) -> AsyncIterator[Harness]:
    model = fakes.tgi
    backend = TgiBackend(model.url, timeout_s=10)
    await backend.start()

    def long(n: int) -> Request:
        _slow_fake_model(model, n)
        return greedy(INPUTS["prompt"], max_new_tokens=n)

    def unavailable() -> Backend:
        server = ServerThread(FakeTgi().app())
        url = f"http://127.0.0.1:{server.start()}"
        server.stop()  # a port that was just free: connections are refused
        return TgiBackend(url, timeout_s=2)

    yield Harness(
        backend,
        "tgi",
        (model.max_input_tokens, model.max_total_tokens),  # from /info
        produced=lambda: model.produced,
        idle=lambda: model.active == 0,
        long=long,
        unavailable=unavailable,
        fail_after=lambda n: _fake_model_fails(model, n),
        ends_by_itself=greedy(INPUTS["prompt"], max_new_tokens=64),
    )
    await backend.aclose()


@harness("sagemaker")
async def _sagemaker(fakes: Fakes) -> AsyncIterator[Harness]:
    async for built in _sagemaker_with(fakes, "tgi"):
        yield built


@harness("sagemaker-openai")
async def _sagemaker_openai(fakes: Fakes) -> AsyncIterator[Harness]:
    """The vLLM container: OpenAI payloads, one max model length (the prompt limit is that less one)."""
    fakes.sagemaker.use_openai()
    async for built in _sagemaker_with(fakes, "openai"):
        yield built


async def _sagemaker_with(fakes: Fakes, payload: PayloadKind) -> AsyncIterator[Harness]:
    endpoint = fakes.sagemaker
    model = endpoint.model
    # The model's tokenizer, as tokenizer.json: the fake model's tokens are whitespace-separated words.
    tokenizer = Tokenizer(WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = WhitespaceSplit()
    tokenizer.save(str(fakes.tmp / "tokenizer.json"))
    session = boto3.session.Session(aws_access_key_id="t", aws_secret_access_key="t", region_name="eu-central-1")

    def make(name: str) -> SageMakerBackend:
        return SageMakerBackend(
            name,
            endpoint_url=endpoint.url,
            session=session,
            tokenizer_path=str(fakes.tmp / "tokenizer.json"),
            payload=payload,
            timeout_s=10,
            max_attempts=1,
        )

    backend = make(ENDPOINT)
    await backend.start()

    def long(n: int) -> Request:
        _slow_fake_model(model, n)
        return greedy(INPUTS["prompt"], max_new_tokens=n)

    yield Harness(
        backend,
        "sagemaker",
        # The deployed container's MAX_*_TOKENS, or vLLM's SM_VLLM_MAX_MODEL_LEN.
        (model.max_input_tokens if payload == "tgi" else model.max_total_tokens - 1, model.max_total_tokens),
        produced=lambda: model.produced,
        idle=lambda: model.active == 0,
        long=long,
        unavailable=lambda: make("no-such-endpoint"),
        fail_after=lambda n: _fake_model_fails(model, n),
        ends_by_itself=greedy(INPUTS["prompt"], max_new_tokens=64),
        exact_chat_count=False,  # no chat template at hand: "role: content" lines (documented)
    )
    await backend.aclose()


def _closed_port_url() -> str:
    server = ServerThread(FakeVllm().app())
    url = f"http://127.0.0.1:{server.start()}/v1"
    server.stop()  # a port that was just free: connections are refused
    return url


@harness("openai")
async def _openai_llamacpp(fakes: Fakes) -> AsyncIterator[Harness]:
    server = fakes.llama
    backend = OpenAIBackend(server.url, timeout_s=30)
    await backend.start()
    yield Harness(
        backend,
        "openai",
        (2047, 2048),  # /props: the slot's n_ctx
        produced=server.produced,
        idle=server.idle,
        long=lambda n: greedy(GenerationInput(prompt="Once upon a time, in a land far away,"), max_new_tokens=n),
        unavailable=lambda: OpenAIBackend(_closed_port_url(), timeout_s=2),
        ends_by_itself=greedy(GenerationInput(messages=(Message("user", "Say just: yes"),)), max_new_tokens=64),
    )
    await backend.aclose()


@harness("openai-vllm")
async def _openai_vllm(fakes: Fakes) -> AsyncIterator[Harness]:
    model = fakes.vllm
    backend = OpenAIBackend(f"{model.url}/v1", timeout_s=10)
    await backend.start()

    def long(n: int) -> Request:
        model.tokens, model.token_delay_s = ["tok"] * n, 0.01
        return greedy(INPUTS["prompt"], max_new_tokens=n)

    def fail_after(n: int) -> None:
        model.error_after = n

    yield Harness(
        backend,
        "openai",
        (model.max_model_len - 1, model.max_model_len),  # max_model_len in /v1/models
        produced=lambda: model.produced,
        idle=lambda: model.active == 0,
        long=long,
        unavailable=lambda: OpenAIBackend(_closed_port_url(), timeout_s=2),
        fail_after=fail_after,
        ends_by_itself=greedy(INPUTS["prompt"], max_new_tokens=64),
    )
    await backend.aclose()


# -- fixtures and helpers ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fakes]:
    fakes = Fakes(FakeTgi(), FakeSageMaker(), tmp_path_factory.mktemp("contract"), FakeVllm(), LlamaServer())
    fakes.tgi.start()
    fakes.sagemaker.start()
    fakes.vllm.start()
    fakes.llama.start()
    yield fakes
    fakes.tgi.stop()
    fakes.sagemaker.stop()
    fakes.vllm.stop()
    fakes.llama.stop()


@pytest.fixture(params=list(HARNESSES))
async def h(request: pytest.FixtureRequest, servers: Fakes) -> AsyncIterator[Harness]:
    servers.tgi.reset()
    servers.sagemaker.reset()
    servers.vllm.reset()
    async with HARNESSES[request.param](servers) as built:
        yield built


async def run(backend: Backend, req: Request) -> tuple[list[Token], Completion]:
    """Every event of a generation, checked to be tokens then exactly one Completion, last."""
    items = [item async for item in backend.generate(req)]
    assert items and isinstance(items[-1], Completion), items[-3:]
    assert all(isinstance(i, Token) for i in items[:-1]), items
    return items[:-1], items[-1]  # type: ignore[return-value]


async def reference(h: Harness, kind: str) -> tuple[list[str], Completion]:
    """The backend's own greedy output without stop sequences: token texts and completion."""
    tokens, completion = await run(h.backend, greedy(INPUTS[kind], max_new_tokens=12))
    texts = [t.text for t in tokens]
    assert "".join(texts) == completion.text and len(texts) >= 4, texts
    return texts, completion


def pick_stop(texts: list[str], where: str) -> tuple[str, str, int]:
    """A stop sequence in the reference output: (stop, expected output, index of the token that completes it).

    whole: one token's word; across: the end of one token and the whole next one (TGI sees it itself);
    inside: a token's text minus its last character (TGI never sees it: it matches at the end of its text).
    """
    full = "".join(texts)
    starts = [sum(len(t) for t in texts[:i]) for i in range(len(texts))]
    for i in range(1, len(texts) - 1):
        token = texts[i]
        if where == "whole":
            stop = token.strip()
            at, last = starts[i] + token.find(stop), i
        elif where == "across":
            head = token[-2:]
            stop, at, last = head + texts[i + 1], starts[i] + len(token) - len(head), i + 1
        else:
            stop = token.rstrip()[:-1]
            at, last = starts[i] + token.find(stop), i
        if stop.strip() and len(stop.strip()) >= 2 and full.find(stop) == at and at > 0:
            return stop, full[:at], last
    raise AssertionError(f"no {where} stop sequence in {texts}")


# -- stop sequences ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(INPUTS))
@pytest.mark.parametrize("where", ["whole", "across", "inside"])
async def test_stop_sequence_is_cut_from_the_output(h: Harness, kind: str, where: str) -> None:
    texts, ref = await reference(h, kind)
    stop, expected, last = pick_stop(texts, where)

    tokens, completion = await run(h.backend, greedy(INPUTS[kind], max_new_tokens=12, stop_sequences=("zzz", stop)))

    assert "".join(t.text for t in tokens) == completion.text == expected
    assert stop not in completion.text
    assert completion.finish_reason == FinishReason.STOP_SEQUENCE
    assert last + 1 <= completion.completion_tokens <= ref.completion_tokens
    if kind == "prompt" or h.exact_chat_count:
        assert completion.prompt_tokens == ref.prompt_tokens == await h.backend.count_tokens(INPUTS[kind])


async def test_all_eight_stop_sequences_the_contract_allows_are_honoured(h: Harness) -> None:
    # TGI refuses more than its --max-stop-sequences (4 by default): the rest are matched by the service.
    texts, _ = await reference(h, "prompt")
    stop, expected, _ = pick_stop(texts, "whole")
    stops = (*(f"zz{i}" for i in range(7)), stop)

    tokens, completion = await run(h.backend, greedy(INPUTS["prompt"], max_new_tokens=12, stop_sequences=stops))

    assert "".join(t.text for t in tokens) == completion.text == expected
    assert completion.finish_reason == FinishReason.STOP_SEQUENCE


async def test_the_start_of_a_stop_sequence_that_never_completes_is_released(h: Harness) -> None:
    texts, ref = await reference(h, "prompt")
    stop = texts[-1] + "\u00a7"  # the output's last token begins it: held back until the end, then released

    tokens, completion = await run(h.backend, greedy(INPUTS["prompt"], max_new_tokens=12, stop_sequences=(stop,)))

    assert "".join(t.text for t in tokens) == completion.text == ref.text
    assert (completion.finish_reason, completion.completion_tokens) == (ref.finish_reason, ref.completion_tokens)


# -- finish reasons, usage, limits ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(INPUTS))
async def test_length_finish_and_usage_counts(h: Harness, kind: str) -> None:
    tokens, completion = await run(h.backend, greedy(INPUTS[kind], max_new_tokens=3))

    assert completion.finish_reason == FinishReason.LENGTH
    assert completion.completion_tokens == len(tokens) == 3
    assert completion.text == "".join(t.text for t in tokens)
    if kind == "prompt" or h.exact_chat_count:
        assert completion.prompt_tokens == await h.backend.count_tokens(INPUTS[kind]) > 0


async def test_end_of_sequence_finish(h: Harness) -> None:
    if h.ends_by_itself is None:
        pytest.skip(f"the {h.name} model never ends by itself")
    tokens, completion = await run(h.backend, h.ends_by_itself)
    assert completion.finish_reason == FinishReason.END_OF_SEQUENCE
    assert completion.text == "".join(t.text for t in tokens)
    assert len(tokens) <= completion.completion_tokens < h.ends_by_itself.parameters.max_new_tokens


async def test_info_reports_the_limits_that_are_enforced(h: Harness) -> None:
    info = h.backend.info()
    assert (info.backend, info.max_input_tokens, info.max_total_tokens) == (h.name, *h.limits)
    generator = Generator(h.backend, Admission(1))
    max_input, max_total = h.limits

    over = Request(GenerationInput(prompt="word " * (2 * max_input + 8)), Parameters(max_new_tokens=1), "r")
    with pytest.raises(InvalidArgument, match=f"input limit of {max_input}"):
        await generator.check_limits(over)
    too_long = Request(INPUTS["prompt"], Parameters(max_new_tokens=max_total), "r")
    with pytest.raises(InvalidArgument, match=f"total limit of {max_total}"):
        await generator.check_limits(too_long)
    fits = Request(INPUTS["prompt"], Parameters(max_new_tokens=max_total - max_input), "r")
    assert await generator.check_limits(fits) == await h.backend.count_tokens(INPUTS["prompt"])


# -- cancellation and errors -------------------------------------------------------------------------------


async def test_closing_the_stream_stops_the_generation(h: Harness) -> None:
    n = 1000
    stream = h.backend.generate(h.long(n))
    for _ in range(2):
        assert isinstance(await anext(stream), Token)
    await stream.aclose()

    await _until(h.idle)
    assert 2 <= h.produced() < n


async def test_a_failure_mid_stream_is_an_error_after_the_tokens_before_it(h: Harness) -> None:
    if h.fail_after is None:
        pytest.skip(f"no way to make the {h.name} model fail mid-stream")
    texts, _ = await reference(h, "prompt")
    h.fail_after(2)
    got: list[str] = []
    with pytest.raises(BackendError):
        async for item in h.backend.generate(greedy(INPUTS["prompt"], max_new_tokens=12)):
            assert isinstance(item, Token), "no Completion after a failure"
            got.append(item.text)
    assert got == texts[:2]


async def test_a_backend_that_cannot_serve_fails_to_start_with_unavailable(h: Harness) -> None:
    if h.unavailable is None:
        pytest.skip(f"the {h.name} backend is always available")
    backend = h.unavailable()
    try:
        with pytest.raises(BackendUnavailable):
            await backend.start()
        assert not await backend.check_health()
    finally:
        await backend.aclose()


async def _until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Waits for condition() (servers run in other threads); the timeout only ends a hung test."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)
