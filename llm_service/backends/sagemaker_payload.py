"""What the SageMaker backend sends and reads, by the container behind the endpoint.

- "tgi" (the Hugging Face TGI DLC): a prompt goes as TGI's generate payload (`inputs`, `parameters`) and
  streams TGI token events; messages go as TGI's chat payload and stream OpenAI-style chat chunks.
- "openai" (the Hugging Face vLLM DLC, AWS's LMI with vLLM): messages go as an OpenAI chat completion,
  a prompt as an OpenAI (text) completion, both streaming OpenAI chunks; the route is named in the
  invoke's CustomAttributes (`route=/v1/chat/completions`), as the vLLM DLC's documentation does.
  vLLM cuts a matched stop sequence from its output; `include_stop_str_in_output` keeps it, so that the
  finish reason can tell a stop sequence from the end of sequence and stops.cut_stop_sequences cuts it
  the same way for every backend.

Either way the PayloadParts carry SSE `data:` lines (sagemaker_stream.SseLines reassembles them) and one
`StreamDecoder` per generation turns the parsed events into Tokens and the final Completion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

from llm_service.backends.tgi_payload import (
    ChatAccumulator,
    chat_finish_reason,
    chat_parameters,
    generate_parameters,
    message_dicts,
    tgi_items,
)
from llm_service.errors import BackendError
from llm_service.types import Completion, Parameters, Request, Token

PayloadKind = Literal["tgi", "openai"]
PAYLOADS: tuple[PayloadKind, ...] = ("tgi", "openai")


class StreamDecoder(Protocol):
    """Turns one generation's stream events into Tokens and, at the end, its Completion."""

    def feed(self, event: dict[str, Any]) -> list[Token | Completion]:
        """The items one parsed SSE event carries."""
        ...

    def end(self) -> Completion | None:
        """The Completion when the stream has ended (None when feed already yielded it); BackendError if cut short."""
        ...


@dataclass(frozen=True, slots=True)
class Invocation:
    """One streaming invoke: the JSON body, the CustomAttributes to send (if any), and its decoder."""

    body: dict[str, Any]
    custom_attributes: str | None
    decoder: StreamDecoder


def invocation(kind: PayloadKind, request: Request) -> Invocation:
    """The body and decoder for `request` in the payload of the container (`kind`)."""
    p = request.parameters
    if kind == "tgi":
        if request.input.messages is None:
            body = {
                "inputs": request.input.prompt or "",
                "parameters": {**generate_parameters(p), "details": True},
                "stream": True,
            }
            return Invocation(body, None, _TgiGenerate(p))
        body = {
            "messages": message_dicts(request.input.messages),
            **chat_parameters(p),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        return Invocation(body, None, _Chat(p))
    common = {**openai_parameters(p), "stream": True, "stream_options": {"include_usage": True}}
    if request.input.messages is None:
        body = {"prompt": request.input.prompt or "", **common}
        if p.return_logprobs:
            body["logprobs"] = 1  # the completions API takes a count of alternatives, not a flag
        return Invocation(body, "route=/v1/completions", _TextCompletion(p))
    body = {"messages": message_dicts(request.input.messages), **common}
    if p.return_logprobs:
        body["logprobs"] = True
    return Invocation(body, "route=/v1/chat/completions", _Chat(p))


def openai_parameters(p: Parameters) -> dict[str, Any]:
    """OpenAI request parameters plus the vLLM extensions that carry the rest of the contract.

    vLLM takes temperature 0 as greedy, and top_k, repetition_penalty and include_stop_str_in_output
    beside OpenAI's own fields; it has no limit on the number of stop sequences.
    """
    out: dict[str, Any] = {"max_tokens": p.max_new_tokens, "temperature": max(p.temperature, 0.0)}
    if 0 < p.top_p < 1:
        out["top_p"] = p.top_p
    if p.top_k > 0:
        out["top_k"] = p.top_k
    if p.repetition_penalty != 1.0:
        out["repetition_penalty"] = p.repetition_penalty
    if p.frequency_penalty:
        out["frequency_penalty"] = p.frequency_penalty
    if p.presence_penalty:
        out["presence_penalty"] = p.presence_penalty
    if p.seed is not None:
        out["seed"] = p.seed
    if p.stop_sequences:
        out["stop"] = list(p.stop_sequences)
        out["include_stop_str_in_output"] = True
    return out


class _TgiGenerate:
    """TGI generate-stream events: a Token each, the last one with `details` also the Completion."""

    def __init__(self, p: Parameters) -> None:
        self._logprobs = p.return_logprobs
        self._finished = False

    def feed(self, event: dict[str, Any]) -> list[Token | Completion]:
        items = tgi_items(event.get("token"), event.get("details"), event.get("generated_text"), self._logprobs)
        self._finished = self._finished or any(isinstance(i, Completion) for i in items)
        return items

    def end(self) -> Completion | None:
        if not self._finished:
            raise BackendError("the SageMaker stream ended before the generation finished")
        return None


class _Chat:
    """OpenAI chat chunks (TGI's chat route and vLLM's alike): tgi_payload.ChatAccumulator's rules."""

    def __init__(self, p: Parameters) -> None:
        self._chat = ChatAccumulator(p)

    def feed(self, event: dict[str, Any]) -> list[Token | Completion]:
        return list(self._chat.feed(event))

    def end(self) -> Completion | None:
        return self._chat.completion()


class _TextCompletion:
    """OpenAI text-completion chunks (`choices[].text`), with ChatAccumulator's finish-reason rules."""

    def __init__(self, p: Parameters) -> None:
        self._p = p
        self._text: list[str] = []
        self._chunks = 0
        self._finish: str | None = None
        self._usage: dict[str, Any] | None = None

    def feed(self, event: dict[str, Any]) -> list[Token | Completion]:
        if event.get("usage"):
            self._usage = event["usage"]
        out: list[Token | Completion] = []
        for choice in event.get("choices") or []:
            self._chunks += 1
            self._finish = choice.get("finish_reason") or self._finish
            text = choice.get("text") or ""
            if text:
                self._text.append(text)
                out.append(Token(text, None, _text_logprob(choice) if self._p.return_logprobs else None))
        return out

    def end(self) -> Completion | None:
        if self._finish is None:
            raise BackendError("the SageMaker stream ended before the generation finished")
        text = "".join(self._text)
        usage = self._usage or {}
        return Completion(
            finish_reason=chat_finish_reason(self._finish, text, self._p.stop_sequences),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0) if usage else self._chunks,
            text=text,
        )


def _text_logprob(choice: dict[str, Any]) -> float | None:
    values = (choice.get("logprobs") or {}).get("token_logprobs") or []
    return values[0] if values else None
