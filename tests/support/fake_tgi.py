"""A loopback TGI server that speaks TGI's real HTTP API, with knobs for errors, slow tokens and cancels.

Routes: GET /info, GET /health, POST /tokenize, POST /chat_tokenize, POST / and /generate_stream (SSE
`data:{json}` token events, the last with `generated_text` and `details`), POST /v1/chat/completions
(OpenAI chunks ending `data: [DONE]`). Its token stream (`FakeTgi.events`) is also what the fake
SageMaker endpoint relays, as TGI's /invocations route does.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

EOS_TEXT = "</s>"
EOS_ID = 2
MAX_STOP_SEQUENCES = 4  # TGI's default --max-stop-sequences


def fake_tokenize(text: str) -> list[str]:
    """The fake model's tokenizer: each word with its leading whitespace is one token."""
    return re.findall(r"\s*\S+", text)


def fake_chat_template(messages: list[dict[str, Any]]) -> str:
    """The fake model's chat template."""
    return "".join(f"<|{m['role']}|>{m['content']}\n" for m in messages) + "<|assistant|>"


class ServerThread:
    """Runs an ASGI app with uvicorn on a loopback port (0: any free one) in a background thread."""

    def __init__(self, app: Any, port: int = 0) -> None:
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_config=None, log_level="warning", lifespan="off", ws="none"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="fake-server", daemon=True)
        self.port = 0

    def start(self) -> int:
        """Start serving and return the bound port."""
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("fake server did not start")
            time.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self.port

    def stop(self) -> None:
        """Stop serving, dropping any stream still open."""
        self._server.should_exit = True
        self._server.force_exit = True
        self._thread.join(timeout=10)


class LoopbackApp:
    """A Starlette app (built by `app()`) served on a free loopback port by a ServerThread."""

    url = ""
    _server: ServerThread | None = None

    def app(self) -> Starlette:
        """The app to serve."""
        raise NotImplementedError

    def start(self) -> str:
        """Serve on a free loopback port; returns the base URL."""
        self._server = ServerThread(self.app())
        self.url = f"http://127.0.0.1:{self._server.start()}"
        return self.url

    def stop(self) -> None:
        """Stop the server."""
        if self._server is not None:
            self._server.stop()


class FakeTgi(LoopbackApp):
    """A fake TGI model and server; set the public attributes (knobs) before a request."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Default knobs and fresh observations (a server can be shared by tests this way)."""
        self.tokens = ["Hello", ",", " wörld", "!"]  # what the "model" generates, one token each
        self.model_id = "fake/twin-llm"
        self.max_input_tokens = 1024
        self.max_total_tokens = 2048
        self.token_delay_s = 0.0  # sleep before each token
        self.error_after: int | None = None  # emit an SSE error event after this many tokens
        self.error_type = "generation"
        self.http_error: tuple[int, dict[str, Any]] | None = None  # answer generation with this instead
        self.healthy = True
        self.tokenize_routes = True  # False: /tokenize and /chat_tokenize answer 404 (no fast tokenizer)
        # Observations.
        self.produced = 0  # tokens produced, all requests together
        self.active = 0  # generations in progress
        self.requests: list[dict[str, Any]] = []  # generation request bodies, in order
        self.headers: list[dict[str, str]] = []  # their headers
        self.adapters: list[str | None] = []  # the LoRA adapter id of each (None: the base model)

    # -- the model -----------------------------------------------------------------------------------

    def _plan(self, max_new_tokens: int, stops: list[str]) -> tuple[list[tuple[int, str, bool]], str]:
        """The tokens (id, text, special) a request gets, and TGI's finish reason."""
        out: list[tuple[int, str, bool]] = []
        text = ""
        for i, piece in enumerate(self.tokens):
            out.append((100 + i, piece, False))
            text += piece
            # TGI matches a stop sequence at the end of the decoded text only (its StopSequenceCriteria is
            # `re.escape(stop) + "$"`), and keeps it in the output: a stop ending inside a token goes unseen.
            if any(text.endswith(s) for s in stops):
                return out, "stop_sequence"
            if len(out) == max_new_tokens:
                return out, "length"
        out.append((EOS_ID, EOS_TEXT, True))  # TGI streams the EOS token itself, marked special
        return out, "eos_token"

    async def events(self, body: dict[str, Any]) -> AsyncIterator[bytes]:
        """The SSE byte stream TGI sends for a generate (`inputs`) or chat (`messages`) request body."""
        self.active += 1
        try:
            chat = "messages" in body
            if chat:
                params = body
                prompt = fake_chat_template(body["messages"])
                max_new = body.get("max_tokens") or 100
            else:
                params = body.get("parameters") or {}
                prompt = body["inputs"]
                max_new = params.get("max_new_tokens") or 100
            plan, finish = self._plan(max_new, params.get("stop") or [])
            input_length = len(fake_tokenize(prompt))
            text = ""
            for i, (token_id, piece, special) in enumerate(plan):
                if self.error_after is not None and i == self.error_after:
                    error = {"error": "Request failed during generation: CUDA out of memory"}
                    yield _sse({**error, "error_type": self.error_type})
                    return
                if self.token_delay_s:
                    await asyncio.sleep(self.token_delay_s)
                self.produced += 1
                text += "" if special else piece
                logprob = -0.25 * (i + 1)
                last = i == len(plan) - 1
                if chat:
                    yield _sse(self._chunk(piece, special, logprob, finish if last else None, body), space=True)
                else:
                    event: dict[str, Any] = {
                        "index": i + 1,
                        "token": {"id": token_id, "text": piece, "logprob": logprob, "special": special},
                        "generated_text": text if last else None,
                        "details": None,
                    }
                    if last:
                        event["details"] = {
                            "finish_reason": finish,
                            "generated_tokens": len(plan),
                            "seed": params.get("seed"),
                            "input_length": input_length,
                        }
                    yield _sse(event)
            if chat:
                if (body.get("stream_options") or {}).get("include_usage"):
                    usage = {"prompt_tokens": input_length, "completion_tokens": len(plan)}
                    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
                    yield _sse({**self._chunk_base(), "choices": [], "usage": usage}, space=True)
                yield b"data: [DONE]\n\n"
        finally:
            self.active -= 1

    def _chunk_base(self) -> dict[str, Any]:
        return {
            "object": "chat.completion.chunk",
            "id": "",
            "created": int(time.time()),
            "model": self.model_id,
            "system_fingerprint": "3.3.6-native",
        }

    def _chunk(
        self, piece: str, special: bool, logprob: float, finish: str | None, body: dict[str, Any]
    ) -> dict[str, Any]:
        content = "" if special else piece
        logprobs = None
        if body.get("logprobs"):
            logprobs = {"content": [{"token": piece, "logprob": logprob, "top_logprobs": []}]}
        # TGI's chat route reports "stop" for both the EOS token and a stop sequence.
        reason = None if finish is None else ("length" if finish == "length" else "stop")
        choice = {
            "index": 0,
            "delta": {"role": "assistant", "content": content},
            "logprobs": logprobs,
            "finish_reason": reason,
        }
        return {**self._chunk_base(), "choices": [choice], "usage": None}

    # -- the HTTP server -----------------------------------------------------------------------------

    def app(self) -> Starlette:
        """The ASGI app answering TGI's routes."""
        return Starlette(
            routes=[
                Route("/info", self._info, methods=["GET"]),
                Route("/health", self._health, methods=["GET"]),
                Route("/tokenize", self._tokenize, methods=["POST"]),
                Route("/chat_tokenize", self._chat_tokenize, methods=["POST"]),
                Route("/", self._generate, methods=["POST"]),
                Route("/generate_stream", self._generate, methods=["POST"]),
                Route("/v1/chat/completions", self._generate, methods=["POST"]),
            ]
        )

    async def _info(self, request: Request) -> Response:
        return JSONResponse(
            {
                "model_id": self.model_id,
                "model_sha": "0123abcd",
                "model_dtype": "torch.float16",
                "model_device_type": "cuda",
                "max_input_tokens": self.max_input_tokens,
                "max_total_tokens": self.max_total_tokens,
                "max_stop_sequences": MAX_STOP_SEQUENCES,
                "version": "3.3.6",
            }
        )

    async def _health(self, request: Request) -> Response:
        return Response(status_code=200 if self.healthy else 503)

    async def _tokenize(self, request: Request) -> Response:
        if not self.tokenize_routes:
            return JSONResponse({"error": "Tokenizer not found", "error_type": "tokenizer"}, status_code=404)
        return JSONResponse(_token_list(fake_tokenize((await request.json())["inputs"])))

    async def _chat_tokenize(self, request: Request) -> Response:
        if not self.tokenize_routes:
            return JSONResponse({"error": "Tokenizer not found", "error_type": "tokenizer"}, status_code=404)
        templated = fake_chat_template((await request.json())["messages"])
        return JSONResponse({"tokenize_response": _token_list(fake_tokenize(templated)), "templated_text": templated})

    async def _generate(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        self.adapters.append(adapter_id(body))
        if self.http_error is not None:
            status, payload = self.http_error
            return JSONResponse(payload, status_code=status)
        if error := validation_error(body):
            return JSONResponse({"error": error, "error_type": "validation"}, status_code=422)
        return StreamingResponse(self.events(body), media_type="text/event-stream")


def _sse(payload: dict[str, Any], *, space: bool = False) -> bytes:
    """One SSE event: TGI's generate stream writes `data:{json}`, its chat stream `data: {json}`."""
    return f"data:{' ' if space else ''}{json.dumps(payload)}\n\n".encode()


def _token_list(pieces: list[str]) -> list[dict[str, Any]]:
    out, pos = [], 0
    for i, piece in enumerate(pieces):
        out.append({"id": 100 + i, "text": piece, "start": pos, "stop": pos + len(piece)})
        pos += len(piece)
    return out


def adapter_id(body: dict[str, Any]) -> str | None:
    """The LoRA adapter a generate or chat body asks TGI for: `parameters.adapter_id`, or on the chat route
    `model` unless it is "tgi" (TGI's router: `adapter_id: model.filter(|m| *m != "tgi")`)."""
    if "messages" in body:
        model = body.get("model")
        return None if model in (None, "tgi") else str(model)
    return (body.get("parameters") or {}).get("adapter_id")


def validation_error(body: dict[str, Any]) -> str | None:
    """What TGI's router refuses (422) in a generate or chat body that this fake checks: too many stops."""
    stops = (body if "messages" in body else body.get("parameters") or {}).get("stop") or []
    if len(stops) > MAX_STOP_SEQUENCES:  # --max-stop-sequences, default 4
        return f"`stop` supports up to {MAX_STOP_SEQUENCES} stop sequences. Given: {len(stops)}"
    return None
