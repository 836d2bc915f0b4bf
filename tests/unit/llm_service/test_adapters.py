"""LoRA adapters (one twin per author on one base model): the request's adapter validated against the backend's
list, the embedded backend on a real adapter GGUF (tests/support/lora.py), TGI's adapter fields, the settings."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from llm_service.backends.echo import EchoBackend
from llm_service.backends.embedded import EmbeddedBackend, packaged_model_path
from llm_service.backends.factory import make_backend
from llm_service.backends.openai import OpenAIBackend
from llm_service.backends.tgi import TgiBackend
from llm_service.convert import request_from_proto
from llm_service.errors import InvalidArgument
from llm_service.settings import Settings, parse_lora_adapters, parse_names
from llm_service.types import Completion, GenerationInput, Message, ModelInfo, Parameters, Request
from llmtwin.llm.v1 import llm_service_pb2 as pb
from servekit.errors import field_violations
from tests.support.fake_tgi import FakeTgi
from tests.support.llm import running_llm
from tests.support.lora import lora_adapter, write_lora

__all__ = ["lora_adapter"]  # the fixture, used below

PROMPT = "The capital of France is"
INFO = ModelInfo("m", "echo", 1000, 2000, adapters=("elena", "jonas"))


# -- the contract: GenerateRequest.adapter -------------------------------------------------------------------


def test_the_adapter_reaches_the_domain_request() -> None:
    message = pb.GenerateRequest(prompt="hi", adapter="jonas")
    assert request_from_proto(message, Settings(), INFO, "r").adapter == "jonas"
    assert request_from_proto(pb.GenerateRequest(prompt="hi"), Settings(), INFO, "r").adapter == ""


@pytest.mark.parametrize(
    ("info", "listed"),
    [
        (INFO, "adapters served: elena, jonas"),
        (ModelInfo("m", "echo", 1000, 2000), "adapters served: none (only the base model)"),
    ],
)
def test_an_unknown_adapter_is_invalid_and_the_error_lists_the_known_ones(info: ModelInfo, listed: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        request_from_proto(pb.GenerateRequest(prompt="hi", adapter="priya"), Settings(), info, "r")
    assert err.value.violations == [("adapter", f"unknown adapter 'priya'; {listed}")]


async def test_the_service_refuses_an_unknown_adapter_and_passes_a_known_one() -> None:
    backend = EchoBackend(adapters=("elena", "jonas"))
    async with running_llm(backend) as llm:
        info = await llm.stub.GetModelInfo(pb.GetModelInfoRequest())
        assert list(info.adapters) == ["elena", "jonas"]
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await llm.stub.Generate(pb.GenerateRequest(prompt="one two", adapter="priya"))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field_violations(err.value) == [("adapter", "unknown adapter 'priya'; adapters served: elena, jonas")]
        for adapter in ("jonas", ""):
            params = pb.GenerationParameters(max_new_tokens=2)
            response = await llm.stub.Generate(pb.GenerateRequest(prompt="one two", adapter=adapter, parameters=params))
            assert response.result.text == "one two "
    assert backend.adapters_used == ["jonas", ""]  # the refused request never reached the backend


# -- settings ------------------------------------------------------------------------------------------------


def test_adapter_settings_parse_and_refuse_malformed_lists() -> None:
    assert parse_lora_adapters(" elena=/a/elena.gguf, jonas=/a/j.gguf@0.5 ,") == {
        "elena": ("/a/elena.gguf", 1.0),
        "jonas": ("/a/j.gguf", 0.5),
    }
    assert parse_lora_adapters("") == {}
    assert parse_names("a, b,,") == ("a", "b")
    for bad in ("elena", "=x.gguf", "elena=", "e=x.gguf@big", "e=a.gguf,e=b.gguf"):
        with pytest.raises(ValueError):
            parse_lora_adapters(bad)
        with pytest.raises(ValueError):
            Settings(lora_adapters=bad)
    with pytest.raises(ValueError):
        Settings(tgi_adapters="a,a")


def test_the_factory_hands_the_adapters_to_the_backends(tmp_path: Path) -> None:
    embedded = make_backend(Settings(lora_adapters=f"elena={tmp_path / 'e.gguf'},jonas={tmp_path / 'j.gguf'}@0.5"))
    assert embedded.info().adapters == ("elena", "jonas")
    assert embedded.lora("jonas") == [{"id": 0, "scale": 0.0}, {"id": 1, "scale": 0.5}]  # type: ignore[attr-defined]
    tgi = make_backend(Settings(backend="tgi", tgi_adapters="predibase/a, b"))
    assert tgi.info().adapters == ("predibase/a", "b")


# -- the embedded backend (llama.cpp) on a real adapter --------------------------------------------------------


@pytest.fixture
async def embedded(lora_adapter: Path, tmp_path: Path) -> AsyncIterator[EmbeddedBackend]:
    other = write_lora(packaged_model_path(), tmp_path / "other.gguf", seed=1)
    backend = EmbeddedBackend(
        packaged_model_path(),
        n_parallel=1,
        n_threads=1,
        adapters={"twin": (lora_adapter, 1.0), "muted": (other, 0.0), "other": (other, 1.0)},
    )
    await backend.start()
    yield backend
    await backend.aclose()


async def greedy_text(backend: EmbeddedBackend, adapter: str, input: GenerationInput | None = None) -> str:
    request = Request(input or GenerationInput(prompt=PROMPT), Parameters(max_new_tokens=12, temperature=0.0), "r")
    items = [item async for item in backend.generate(Request(request.input, request.parameters, "r", adapter))]
    assert isinstance(items[-1], Completion)
    return items[-1].text


async def test_embedded_lists_its_adapters(embedded: EmbeddedBackend) -> None:
    assert embedded.info().adapters == ("twin", "muted", "other")


async def test_an_adapter_changes_the_output_and_scale_0_gives_the_base_model(embedded: EmbeddedBackend) -> None:
    base = await greedy_text(embedded, "")
    twin = await greedy_text(embedded, "twin")
    other = await greedy_text(embedded, "other")
    assert base.startswith(" Paris")  # the packaged model's own answer
    assert twin != base and other != base and twin != other
    assert await greedy_text(embedded, "muted") == base  # an adapter at scale 0 is the base model
    # Each request sets every adapter's scale: nothing leaks from the previous request, also not through the
    # slot's cached prompt (llama.cpp drops it when the adapters change).
    assert await greedy_text(embedded, "") == base
    assert await greedy_text(embedded, "twin") == twin
    chat = GenerationInput(messages=(Message("user", "What is the capital of France?"),))
    assert await greedy_text(embedded, "twin", chat) != await greedy_text(embedded, "", chat)


async def test_llama_cpp_server_applies_the_adapter_per_request(embedded: EmbeddedBackend) -> None:
    """llama.cpp's own HTTP server (the same process) takes the same `lora` list per request."""
    url = embedded._server.listening_address
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        loaded = (await http.get("/lora-adapters")).json()
        assert [(a["id"], a["scale"]) for a in loaded] == [(0, 0.0), (1, 0.0), (2, 0.0)]  # loaded, not applied

        async def complete(lora: list[dict[str, float]]) -> str:
            body = {"prompt": PROMPT, "max_tokens": 12, "temperature": 0.0, "lora": lora}
            return str((await http.post("/v1/completions", json=body)).json()["choices"][0]["text"])

        base = await complete(embedded.lora(""))
        assert base == await greedy_text(embedded, "")
        # Not compared with the backend's text: with a random adapter the top two tokens are close, and a
        # prompt evaluated in another batch shape (the slot's cache reused) can flip a greedy pick.
        assert await complete(embedded.lora("twin")) != base
        assert await complete(embedded.lora("")) == base


async def test_the_openai_backend_generates_with_the_adapter_on_llama_cpps_server(embedded: EmbeddedBackend) -> None:
    """LLM_BACKEND=openai in front of llama.cpp's server (the embedded backend's, adapters loaded): the adapter
    a request names changes the output, and no adapter is the base model."""
    api = f"{embedded._server.listening_address}/v1"
    remote = OpenAIBackend(api, adapters={"twin": 0, "other": 2})  # names for the server's adapter ids
    await remote.start()
    try:
        assert remote.info().adapters == ("twin", "other")

        async def text(adapter: str) -> str:
            request = Request(GenerationInput(prompt=PROMPT), Parameters(max_new_tokens=12, temperature=0.0), "r")
            items = [i async for i in remote.generate(Request(request.input, request.parameters, "r", adapter))]
            assert isinstance(items[-1], Completion)
            return items[-1].text

        base = await text("")
        assert base.startswith(" Paris")  # the packaged model's own answer
        twin = await text("twin")
        assert twin != base
        assert await text("other") not in (base, twin)
        assert await text("") == base  # every adapter at scale 0: nothing left from the previous request
    finally:
        await remote.aclose()


async def test_a_missing_adapter_file_is_unavailable(tmp_path: Path) -> None:
    backend = EmbeddedBackend(packaged_model_path(), adapters={"twin": (tmp_path / "missing.gguf", 1.0)})
    with pytest.raises(Exception, match="LoRA adapter 'twin': file not found"):
        await backend.start()


# -- TGI: adapter_id on the generate route, `model` on the chat route ------------------------------------------


@pytest.fixture(scope="module")
def tgi() -> Iterator[FakeTgi]:
    fake = FakeTgi()
    fake.start()
    yield fake
    fake.stop()


@pytest.mark.parametrize("messages", [False, True], ids=["prompt", "messages"])
async def test_tgi_sends_the_adapter_on_both_routes(tgi: FakeTgi, messages: bool) -> None:
    tgi.reset()
    backend = TgiBackend(tgi.url, timeout_s=5, adapters=("elena", "jonas"))
    await backend.start()
    try:
        assert backend.info().adapters == ("elena", "jonas")
        input = GenerationInput(messages=(Message("user", "hi"),)) if messages else GenerationInput(prompt="hi")
        for adapter in ("elena", ""):
            items = [i async for i in backend.generate(Request(input, Parameters(max_new_tokens=3), "r", adapter))]
            assert isinstance(items[-1], Completion)
    finally:
        await backend.aclose()
    assert tgi.adapters == ["elena", None]
    if messages:
        assert [r["model"] for r in tgi.requests] == ["elena", "tgi"]  # TGI's chat route: "tgi" is the base model
    else:
        assert [(r["parameters"] or {}).get("adapter_id") for r in tgi.requests] == ["elena", None]
