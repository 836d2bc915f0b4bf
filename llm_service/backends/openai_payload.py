"""What OpenAI-compatible servers take and send: request bodies, stream chunks, limits and error statuses.

The servers differ beyond the OpenAI API itself, so `start()` names a dialect from what the server exposes:

- "vllm": vLLM and SGLang (`max_model_len` in /v1/models): /tokenize with `prompt` or `messages`, a
  `stop_reason` (vLLM) or `matched_stop` (SGLang) on the finishing choice, LoRA modules served as models.
- "llamacpp": llama.cpp's server (`default_generation_settings` in /props): /tokenize with `content`,
  /apply-template for the chat template, per-slot `n_ctx`, adapters as a `lora` list in the body.
- "openai": anything else (Ollama, hosted endpoints): configured limits, estimated counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from llm_service.errors import BackendError, BackendUnavailable, InvalidArgument, Overloaded, ServiceError
from llm_service.types import Completion, FinishReason, Parameters, Request, Token

Dialect = Literal["vllm", "llamacpp", "openai"]

# OpenAI's API (and servers copying its validation) accepts at most 4 `stop` strings; the contract allows 8.
SERVER_MAX_STOP_SEQUENCES = 4


def parse_adapter_ids(spec: str) -> dict[str, int]:
    """LLM_OPENAI_ADAPTERS ("name" or "name=id", comma-separated) as name → llama.cpp adapter id.

    A name without an id takes its position in the list (llama.cpp numbers `--lora` adapters in order).
    """
    out: dict[str, int] = {}
    for position, item in enumerate(part.strip() for part in spec.split(",")):
        if not item:
            continue
        name, _, number = item.partition("=")
        if not name.strip():
            raise ValueError(f"adapter without a name in {spec!r}")
        try:
            out[name.strip()] = int(number) if number.strip() else position
        except ValueError:
            raise ValueError(f"adapter id of {name.strip()!r} is not an integer: {number!r}") from None
    return out


@dataclass(frozen=True, slots=True)
class ServerProfile:
    """What start() learnt about the server: its dialect, base model, limits and LoRA modules."""

    dialect: Dialect
    model: str
    max_total_tokens: int | None = None  # None: the server does not say
    served_adapters: tuple[str, ...] = field(default=())  # vLLM: LoRA modules listed in /v1/models


def read_profile(models: list[dict[str, Any]], props: dict[str, Any] | None, model: str) -> ServerProfile:
    """The profile from /v1/models entries and llama.cpp's /props (None when the server has no /props).

    The model is the configured one, else the first base model listed (vLLM lists its LoRA modules after
    it, each with a `parent`).
    """
    bases = [m for m in models if not m.get("parent")]
    name = model or (bases[0]["id"] if bases else "")
    if not name:
        raise BackendUnavailable("the server lists no model in /v1/models: set LLM_OPENAI_MODEL")
    settings = (props or {}).get("default_generation_settings")
    if isinstance(settings, dict):
        n_ctx = settings.get("n_ctx") or (props or {}).get("n_ctx")
        return ServerProfile("llamacpp", name, int(n_ctx) if n_ctx else None)
    entry = next((m for m in models if m.get("id") == name), None)
    if entry is not None and entry.get("max_model_len"):
        adapters = tuple(m["id"] for m in models if m.get("parent") == name)
        return ServerProfile("vllm", name, int(entry["max_model_len"]), adapters)
    return ServerProfile("openai", name)


def sends_stops(dialect: Dialect) -> bool:
    """Whether stop sequences go to the server.

    Only vLLM and SGLang say which stop ended a generation (`stop_reason` / `matched_stop`). llama.cpp's
    and OpenAI's routes answer "stop" both for the end-of-sequence token and for a stop string they cut
    from the text, so the contract's STOP_SEQUENCE finish could not be told from END_OF_SEQUENCE: there the
    service matches every stop itself (stops.cut_stop_sequences), closing the stream one token after.
    """
    return dialect == "vllm"


def request_body(
    request: Request, *, dialect: Dialect, model: str, adapters: dict[str, int], chat: bool
) -> dict[str, Any]:
    """The keyword arguments for `chat.completions.create` or `completions.create` (streaming, with usage).

    Temperature 0 is greedy on every server. top_k and the repetition penalty are not in OpenAI's API:
    they go in `extra_body` to servers that take them (vLLM `repetition_penalty`, llama.cpp
    `repeat_penalty`), and are left out for others, which may reject unknown fields.
    """
    p = request.parameters
    out: dict[str, Any] = {
        "model": model,
        "max_tokens": p.max_new_tokens,
        "temperature": max(p.temperature, 0.0),
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if 0 < p.top_p < 1:
        out["top_p"] = p.top_p
    if p.frequency_penalty:
        out["frequency_penalty"] = p.frequency_penalty
    if p.presence_penalty:
        out["presence_penalty"] = p.presence_penalty
    if p.seed is not None:
        out["seed"] = p.seed
    if p.stop_sequences and sends_stops(dialect):
        out["stop"] = list(p.stop_sequences[:SERVER_MAX_STOP_SEQUENCES])
    if p.return_logprobs:
        out["logprobs"] = True if chat else 1
    extra: dict[str, Any] = {}
    if dialect != "openai" and p.top_k > 0:
        extra["top_k"] = p.top_k
    if p.repetition_penalty != 1.0:
        if dialect == "vllm":
            extra["repetition_penalty"] = p.repetition_penalty
        elif dialect == "llamacpp":
            extra["repeat_penalty"] = p.repetition_penalty
    if dialect == "llamacpp":
        if adapters:
            # Every loaded adapter gets a scale, so the base model really runs without them.
            extra["lora"] = [
                {"id": n, "scale": 1.0 if name == request.adapter else 0.0} for name, n in adapters.items()
            ]
    elif request.adapter:
        out["model"] = request.adapter  # vLLM and SGLang serve each LoRA module under its own model name
    if extra:
        out["extra_body"] = extra
    return out


def check_adapter(adapter: str, known: tuple[str, ...]) -> None:
    """InvalidArgument naming the served adapters when `adapter` is not one of them ("" is the base model)."""
    if adapter and adapter not in known:
        served = ", ".join(known) if known else "none"
        raise InvalidArgument({"adapter": f"unknown adapter {adapter!r}; this backend serves: {served}"})


class StreamAccumulator:
    """Turns chat or completion chunks (the SDK's objects) into Tokens and, at the end, the Completion."""

    def __init__(self, p: Parameters) -> None:
        self._p = p
        self._text: list[str] = []
        self._pieces = 0
        self._finish: str | None = None
        self._stop_reason: Any = None
        self._usage: Any = None

    def feed(self, chunk: Any) -> list[Token]:
        """The tokens in one chunk (none for a role-only or usage-only chunk)."""
        if getattr(chunk, "usage", None):
            self._usage = chunk.usage
        out = []
        for choice in chunk.choices or []:
            if choice.finish_reason:
                self._finish = choice.finish_reason
                self._stop_reason = _get(choice, "stop_reason") or _get(choice, "matched_stop")
            delta = getattr(choice, "delta", None)
            text = (delta.content if delta is not None else getattr(choice, "text", None)) or ""
            if text:
                self._pieces += 1
                self._text.append(text)
                out.append(_token(text, choice.logprobs if self._p.return_logprobs else None))
        return out

    def completion(self) -> Completion:
        """The Completion once the stream has ended; BackendError when it ended without a finish reason."""
        if self._finish is None:
            raise BackendError("the stream ended before the generation finished")
        if self._finish == "length":
            finish = FinishReason.LENGTH
        elif isinstance(self._stop_reason, str):  # vLLM / SGLang: the stop string matched (an int: a stop token)
            finish = FinishReason.STOP_SEQUENCE
        else:
            finish = FinishReason.END_OF_SEQUENCE
        usage = self._usage
        return Completion(
            finish_reason=finish,
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(usage.completion_tokens) if usage else self._pieces,
            text="".join(self._text),
        )


def _token(text: str, logprobs: Any) -> Token:
    """A Token with the chosen token's logprob when the chunk has one.

    Chat chunks carry `logprobs.content[0]`; completion chunks OpenAI's `token_logprobs[0]` (vLLM) or,
    from llama.cpp, the chat form with the token id.
    """
    if logprobs is None:
        return Token(text)
    if content := _get(logprobs, "content"):
        return Token(text, _get(content[0], "id"), _get(content[0], "logprob"))
    values = _get(logprobs, "token_logprobs") or []
    return Token(text, None, values[0] if values else None)


def _get(obj: Any, name: str) -> Any:
    """A field of an SDK object (extra fields included) or of a plain dict."""
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def error_from_status(status: int, message: str, *, adapter: str = "", error_type: str = "") -> ServiceError:
    """The service error for an HTTP error status of an OpenAI-compatible server and its message."""
    if status == 404 and adapter:
        return InvalidArgument({"adapter": f"the server does not serve adapter {adapter!r}: {message}"})
    if status in (400, 413, 422):
        field_name = "prompt" if "context" in (message + error_type).lower() else "parameters"
        return InvalidArgument({field_name: message})
    if status == 429:
        return Overloaded(f"the model server is overloaded: {message}")
    if status in (502, 503, 504):
        return BackendUnavailable(f"the model server is unavailable (HTTP {status}): {message}")
    if status in (401, 403):
        return BackendError(
            f"the model server refused the request (HTTP {status}; check LLM_OPENAI_API_KEY): {message}"
        )
    return BackendError(f"the model server answered HTTP {status}: {message}")
