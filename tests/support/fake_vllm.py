"""A loopback stand-in of vLLM's OpenAI-compatible server, wire-true where llama.cpp's server differs.

Routes as vLLM has them: GET /health, GET /v1/models (each model with `max_model_len`; LoRA modules listed
after the base model with `parent` and `root`), POST /tokenize (`prompt` or `messages` →
`{"count", "max_model_len", "tokens", "token_strs"}`), POST /v1/completions and /v1/chat/completions
(streamed chunks with `stop_reason`, a usage chunk with `stream_options.include_usage`, `data: [DONE]`).
Stop strings are cut from the text, with the text that may begin one held back, as vLLM streams them.
Errors are vLLM's bodies: `{"error": {"message", "type", "param", "code"}}` (400 for the context length,
404 for an unknown model), and mid-stream `data: {"error": {...}}` followed by `data: [DONE]`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.support.fake_tgi import LoopbackApp, fake_chat_template, fake_tokenize


def vllm_error(message: str, type_: str, code: int, param: str | None = None) -> JSONResponse:
    """vLLM's ErrorResponse."""
    return JSONResponse({"error": {"message": message, "type": type_, "param": param, "code": code}}, code)


class FakeVllm(LoopbackApp):
    """A fake vLLM model and server; set the public attributes (knobs) before a request."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Default knobs and fresh observations."""
        self.tokens = ["The", " sea", " is", " wide", ",", " deep", " and", " blue", "."]  # one token each
        self.model_id = "fake/twin-llm"
        self.lora_modules = ["twin-style"]
        self.max_model_len = 2048  # 0: left out of /v1/models, as servers other than vLLM and SGLang do
        self.token_delay_s = 0.0
        self.error_after: int | None = None  # an error event in the stream after this many tokens
        self.http_error: tuple[int, str, str] | None = None  # (status, type, message) instead of generating
        self.healthy = True
        self.produced = 0
        self.active = 0
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []

    def app(self) -> Starlette:
        """The ASGI app answering vLLM's routes."""
        return Starlette(
            routes=[
                Route("/health", self._health, methods=["GET"]),
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/tokenize", self._tokenize, methods=["POST"]),
                Route("/v1/completions", self._generate, methods=["POST"]),
                Route("/v1/chat/completions", self._generate, methods=["POST"]),
            ]
        )

    async def _health(self, request: Request) -> Response:
        return Response(status_code=200 if self.healthy else 503)

    async def _models(self, request: Request) -> Response:
        base = self._card(self.model_id, self.model_id, None)
        loras = [self._card(name, f"/adapters/{name}", self.model_id) for name in self.lora_modules]
        return JSONResponse({"object": "list", "data": [base, *loras]})

    def _card(self, id_: str, root: str, parent: str | None) -> dict[str, Any]:
        return {
            "id": id_,
            "object": "model",
            "created": int(time.time()),
            "owned_by": "vllm",
            "root": root,
            "parent": parent,
            "permission": [],
        } | ({"max_model_len": self.max_model_len} if self.max_model_len else {})

    def _prompt(self, body: dict[str, Any]) -> str:
        return fake_chat_template(body["messages"]) if "messages" in body else str(body.get("prompt", ""))

    async def _tokenize(self, request: Request) -> Response:
        body = await request.json()
        pieces = fake_tokenize(self._prompt(body))
        tokens = [100 + i for i in range(len(pieces))]
        return JSONResponse(
            {"count": len(tokens), "max_model_len": self.max_model_len, "tokens": tokens, "token_strs": None}
        )

    async def _generate(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        if self.http_error is not None:
            status, type_, message = self.http_error
            return vllm_error(message, type_, status)
        if body.get("model") not in (self.model_id, *self.lora_modules):
            return vllm_error(f"The model `{body.get('model')}` does not exist.", "NotFoundError", 404, "model")
        prompt_tokens = len(fake_tokenize(self._prompt(body)))
        max_tokens = body.get("max_tokens") or self.max_model_len - prompt_tokens or 100
        if self.max_model_len and prompt_tokens + max_tokens > self.max_model_len:
            message = (
                f"This model's maximum context length is {self.max_model_len} tokens. However, you requested "
                f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, {max_tokens} in the "
                "completion). Please reduce the length of the messages or completion."
            )
            return vllm_error(message, "BadRequestError", 400)
        return StreamingResponse(self._events(body, prompt_tokens, max_tokens), media_type="text/event-stream")

    async def _events(self, body: dict[str, Any], prompt_tokens: int, max_tokens: int) -> AsyncIterator[bytes]:
        chat = "messages" in body
        stops = [s for s in body.get("stop") or [] if s]
        hold = max((len(s) for s in stops), default=1) - 1  # vLLM holds back what may begin a stop string
        base = {
            "id": "cmpl-fake",
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()),
            "model": body["model"],
        }
        self.active += 1
        try:
            if chat:
                yield _sse({**base, "choices": [_choice(chat, "", None, None, None, role=True)]})
            text, sent, generated = "", 0, 0
            logprob: float | None = None
            finish: str | None = None
            stop_reason: str | None = None
            while finish is None:
                if self.error_after is not None and generated == self.error_after:
                    yield _sse(
                        {
                            "error": {
                                "message": "CUDA out of memory",
                                "type": "InternalServerError",
                                "param": None,
                                "code": 500,
                            }
                        }
                    )
                    yield b"data: [DONE]\n\n"
                    return
                if generated == len(self.tokens):
                    finish = "stop"  # the EOS token: stop_reason None
                    break
                if self.token_delay_s:
                    await asyncio.sleep(self.token_delay_s)
                piece = self.tokens[generated]
                generated += 1
                self.produced += 1
                text += piece
                for stop in stops:
                    if (at := text.find(stop)) >= 0:
                        text, finish, stop_reason = text[:at], "stop", stop
                        break
                if finish is None and generated == max_tokens:
                    finish = "length"
                logprob = -0.25 * generated if body.get("logprobs") else None
                if finish is None:
                    upto = max(sent, len(text) - hold)
                    delta, sent = text[sent:upto], upto
                    yield _sse({**base, "choices": [_choice(chat, delta, logprob, None, None)]})
            yield _sse({**base, "choices": [_choice(chat, text[sent:], logprob, finish, stop_reason)]})
            if (body.get("stream_options") or {}).get("include_usage"):
                usage = {"prompt_tokens": prompt_tokens, "completion_tokens": generated}
                usage["total_tokens"] = prompt_tokens + generated
                yield _sse({**base, "choices": [], "usage": usage})
            yield b"data: [DONE]\n\n"
        finally:
            self.active -= 1


def _choice(
    chat: bool, text: str, logprob: float | None, finish: str | None, stop_reason: str | None, *, role: bool = False
) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "stop_reason": stop_reason}
    if chat:
        choice["delta"] = {"role": "assistant", "content": ""} if role else {"content": text}
        choice["logprobs"] = (
            {"content": [{"token": text, "logprob": logprob, "bytes": list(text.encode()), "top_logprobs": []}]}
            if logprob is not None
            else None
        )
    else:
        choice["text"] = text
        choice["logprobs"] = (
            {"text_offset": [0], "token_logprobs": [logprob], "tokens": [text], "top_logprobs": [{text: logprob}]}
            if logprob is not None
            else None
        )
    return choice


def _sse(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()
