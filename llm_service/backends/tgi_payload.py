"""TGI's payloads: request parameters, stream events and finish reasons, error bodies.

Shared by the TGI backend (TGI's HTTP API) and the SageMaker backend (the same payloads through the TGI
container behind an endpoint); the chat-message helpers, token estimate and OpenAI-style finish reason also
serve the openai backend and SageMaker's OpenAI payload. Events and chunks are read either as
huggingface_hub's output types or as the same JSON parsed into plain dicts.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from llm_service.errors import BackendError, BackendUnavailable, InvalidArgument, Overloaded, ServiceError
from llm_service.types import Completion, FinishReason, Message, Parameters, Token

# TGI's default --max-stop-sequences: more stops in a request are refused (422).
SERVER_MAX_STOP_SEQUENCES = 4

_TGI_FINISH = {
    "length": FinishReason.LENGTH,
    "eos_token": FinishReason.END_OF_SEQUENCE,
    "stop_sequence": FinishReason.STOP_SEQUENCE,
}


def server_stops(p: Parameters) -> list[str]:
    """The stop sequences sent to the server: TGI refuses more than its --max-stop-sequences (4 by default)
    with a 422, while the contract allows 8; the rest are matched by stops.cut_stop_sequences, which ends
    the generation at the token after one of them."""
    return list(p.stop_sequences[:SERVER_MAX_STOP_SEQUENCES])


def generate_parameters(p: Parameters) -> dict[str, Any]:
    """TGI generate `parameters` for a prompt, leaving out values TGI rejects or that mean "off".

    Temperature 0 means greedy: TGI rejects temperature <= 0, so greedy is `do_sample=False` with no
    sampling knobs. TGI also rejects top_p outside (0, 1) and top_k <= 0.
    """
    out: dict[str, Any] = {"max_new_tokens": p.max_new_tokens}
    if p.temperature > 0:
        out.update(do_sample=True, temperature=p.temperature)
        if 0 < p.top_p < 1:
            out["top_p"] = p.top_p
        if p.top_k > 0:
            out["top_k"] = p.top_k
        if p.seed is not None:
            out["seed"] = p.seed
    else:
        out["do_sample"] = False
    if p.repetition_penalty != 1.0:
        out["repetition_penalty"] = p.repetition_penalty
    if p.frequency_penalty:
        out["frequency_penalty"] = p.frequency_penalty  # TGI's generate route has no presence_penalty
    if p.stop_sequences:
        out["stop"] = server_stops(p)
    return out


def chat_parameters(p: Parameters) -> dict[str, Any]:
    """OpenAI-style chat parameters for TGI's chat route.

    TGI's chat route itself turns temperature 0 into greedy decoding. It has no top_k nor
    repetition_penalty (OpenAI's API has neither), so those two are not sent for messages; repetition is
    controlled there with OpenAI's frequency_penalty and presence_penalty.
    """
    out: dict[str, Any] = {"max_tokens": p.max_new_tokens, "temperature": max(p.temperature, 0.0)}
    if p.frequency_penalty:
        out["frequency_penalty"] = p.frequency_penalty
    if p.presence_penalty:
        out["presence_penalty"] = p.presence_penalty
    if 0 < p.top_p < 1:
        out["top_p"] = p.top_p
    if p.stop_sequences:
        out["stop"] = server_stops(p)
    if p.seed is not None:
        out["seed"] = p.seed
    if p.return_logprobs:
        out["logprobs"] = True
    return out


def chat_finish_reason(finish: str, text: str, stops: Sequence[str]) -> FinishReason:
    """The finish reason of an OpenAI-style stream whose "stop" means both the end-of-sequence token and a stop
    sequence: STOP_SEQUENCE when a requested stop ends the text (the server keeps it there), else EOS."""
    if finish == "length":
        return FinishReason.LENGTH
    if any(text.endswith(stop) for stop in stops):
        return FinishReason.STOP_SEQUENCE
    return FinishReason.END_OF_SEQUENCE


def message_dicts(messages: tuple[Message, ...]) -> list[dict[str, str]]:
    """Messages as the chat API takes them."""
    return [{"role": m.role, "content": m.content} for m in messages]


def plain_chat_text(messages: tuple[Message, ...]) -> str:
    """Messages as "role: content" lines, for token counts where no chat template is at hand."""
    return "".join(f"{m.role}: {m.content}\n" for m in messages)


def estimate_tokens(text: str) -> int:
    """About one token per 4 characters: the usual rule of thumb for English with BPE tokenizers."""
    return math.ceil(len(text) / 4)


def tgi_items(token: Any, details: Any, generated_text: str | None, logprobs: bool) -> list[Token | Completion]:
    """One generate-stream event as its Token, then the Completion when it is the final event (with details).

    Special tokens (the EOS token TGI streams when the model ends by itself) are left out of the text, as
    TGI leaves them out of `generated_text`; they still count in `generated_tokens`.
    """
    out: list[Token | Completion] = []
    if not _get(token, "special"):
        out.append(Token(_get(token, "text"), _get(token, "id"), _get(token, "logprob") if logprobs else None))
    if details is not None:
        finish = _TGI_FINISH.get(_get(details, "finish_reason"), FinishReason.UNSPECIFIED)
        completion_tokens = int(_get(details, "generated_tokens") or 0)
        prompt_tokens = int(_get(details, "input_length") or 0)
        out.append(Completion(finish, prompt_tokens, completion_tokens, generated_text or ""))
    return out


class ChatAccumulator:
    """Turns TGI chat chunks (typed or plain dicts) into Tokens and, at the end, the Completion.

    TGI's chat route reports "stop" both for the EOS token and for a stop sequence. We report
    STOP_SEQUENCE when a requested stop sequence ends the text (TGI keeps the matched stop sequence in
    the output; stops.cut_stop_sequences then cuts it), END_OF_SEQUENCE otherwise. Without a usage chunk,
    completion tokens are the chunks seen.
    """

    def __init__(self, p: Parameters) -> None:
        self._p = p
        self._text: list[str] = []
        self._chunks = 0
        self._finish: str | None = None
        self._usage: Any = None

    def feed(self, chunk: Any) -> list[Token]:
        """The tokens in one chunk (none for a usage-only chunk)."""
        if _get(chunk, "usage"):
            self._usage = _get(chunk, "usage")
        out = []
        for choice in _get(chunk, "choices") or []:
            self._chunks += 1
            self._finish = _get(choice, "finish_reason") or self._finish
            content = _get(_get(choice, "delta"), "content") or ""
            if content:
                self._text.append(content)
                out.append(Token(content, None, _chat_logprob(choice) if self._p.return_logprobs else None))
        return out

    def completion(self) -> Completion:
        """The Completion once the stream has ended."""
        if self._finish is None:
            raise BackendError("the chat stream ended before the generation finished")
        text = "".join(self._text)
        usage = self._usage
        return Completion(
            finish_reason=chat_finish_reason(self._finish, text, self._p.stop_sequences),
            prompt_tokens=int(_get(usage, "prompt_tokens") or 0) if usage else 0,
            completion_tokens=int(_get(usage, "completion_tokens") or 0) if usage else self._chunks,
            text=text,
        )


def error_from_tgi(message: str, error_type: str | None) -> ServiceError:
    """The service error for a TGI error body or SSE error event (`error`, `error_type`)."""
    if error_type == "validation":
        return InvalidArgument({"parameters": message})
    if error_type == "overloaded":
        return Overloaded(f"TGI is overloaded: {message}")
    return BackendError(f"TGI failed: {message}")


def error_from_status(status: int, body: str) -> ServiceError:
    """The service error for a TGI HTTP error status and its body."""
    try:
        payload = json.loads(body)
        message, error_type = str(payload.get("error") or body), payload.get("error_type")
    except (ValueError, AttributeError):
        message, error_type = body, None
    if status == 422 or error_type == "validation":
        return InvalidArgument({"parameters": message})
    if status == 429 or error_type == "overloaded":
        return Overloaded(f"TGI is overloaded: {message}")
    if status in (502, 503, 504):
        return BackendUnavailable(f"TGI is unavailable (HTTP {status}): {message}")
    return BackendError(f"TGI answered HTTP {status}: {message}")


def _chat_logprob(choice: Any) -> float | None:
    content = _get(_get(choice, "logprobs"), "content") or []
    return _get(content[0], "logprob") if content else None


def _get(obj: Any, name: str) -> Any:
    """A field of a huggingface_hub output type or of the same thing parsed as a plain dict."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)
