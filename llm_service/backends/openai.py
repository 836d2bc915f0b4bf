"""OpenAI-compatible backend: vLLM, SGLang, llama.cpp's server, Ollama, TGI's Messages API, hosted endpoints.

Messages stream from /v1/chat/completions, prompts from /v1/completions, through the openai SDK's
AsyncOpenAI. Limits and token counts come from what the server exposes beyond that API (see
openai_payload for the dialects), configured limits otherwise. Request bodies, chunks and error statuses
are in openai_payload.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import httpx
import openai
from openai import AsyncOpenAI

from llm_service.backends.openai_payload import (
    ServerProfile,
    StreamAccumulator,
    check_adapter,
    error_from_status,
    read_profile,
    request_body,
)
from llm_service.backends.tgi_payload import estimate_tokens, message_dicts, plain_chat_text
from llm_service.errors import BackendError, BackendUnavailable, ServiceError
from llm_service.stops import cut_stop_sequences
from llm_service.types import Completion, GenerationInput, ModelInfo, Request, Token


class OpenAIBackend:
    """An OpenAI-compatible server whose API is at `base_url` (ending in /v1, as the openai SDK takes it)."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str = "",
        model: str = "",
        model_id: str = "",
        adapters: dict[str, int] | None = None,
        max_input_tokens: int = 2048,
        max_total_tokens: int = 4096,
        timeout_s: float = 120.0,
        max_retries: int = 0,
    ) -> None:
        self._api = base_url.rstrip("/")
        # Routes beyond the OpenAI API (/health, /tokenize, /props) are at the server's root.
        self._root = self._api.removesuffix("/v1")
        self._model = model
        self._model_id = model_id
        self._adapters = dict(adapters or {})
        self._fallback = (max_input_tokens, max_total_tokens)
        self._profile = ServerProfile("openai", model)
        self._info = ModelInfo(model_id or model or self._api, "openai", max_input_tokens, max_total_tokens)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # timeout_s bounds connecting and each wait between two reads, not a whole generation.
        self._http = httpx.AsyncClient(
            base_url=self._root, headers=headers, timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0))
        )
        # A server without auth ignores the key; the SDK insists on one (and must not read OPENAI_API_KEY).
        self._client = AsyncOpenAI(
            base_url=self._api, api_key=api_key or "none", http_client=self._http, max_retries=max_retries
        )
        self._health_path = "/health"

    async def start(self) -> None:
        """Learn the server's dialect, model, limits and LoRA modules; BackendUnavailable when unreachable."""
        models = (await self._get_json(f"{self._api}/models", required=True)).get("data") or []
        props = await self._get_json("/props")  # llama.cpp's server only
        self._profile = profile = read_profile(models, props, self._model)
        if profile.max_total_tokens:
            # The server knows only a context length: a prompt may take all of it but the one token to generate.
            max_total, max_input = profile.max_total_tokens, profile.max_total_tokens - 1
        else:
            max_input, max_total = self._fallback
        adapters = tuple(self._adapters) or profile.served_adapters
        if profile.dialect != "llamacpp":
            self._adapters = dict.fromkeys(adapters, 0)
        self._info = ModelInfo(
            model_id=self._model_id or profile.model,
            backend="openai",
            max_input_tokens=max_input,
            max_total_tokens=max_total,
            adapters=adapters,
        )
        if (await self._request("GET", "/health")).status_code == 404:
            self._health_path = f"{self._api}/models"  # hosted endpoints have no /health

    async def _get_json(self, path: str, *, required: bool = False) -> Any:
        response = await self._request("GET", path)
        if response.status_code == 200:
            return response.json()
        if required:
            raise BackendUnavailable(
                f"the model server at {self._api} answered {path} with HTTP {response.status_code}"
            )
        return None

    async def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        try:
            return await self._http.request(method, path, json=body)
        except httpx.TransportError as exc:
            raise BackendUnavailable(f"the model server at {self._api} is unreachable: {exc!r}") from exc

    def info(self) -> ModelInfo:
        """The served model, its limits and adapters (from the server after start)."""
        return self._info

    async def check_health(self) -> bool:
        """True when the server's /health (or, for hosted endpoints, /v1/models) answers 200."""
        try:
            return (await self._http.get(self._health_path)).status_code == 200
        except httpx.HTTPError:
            return False

    async def count_tokens(self, input: GenerationInput) -> int:
        """The server's own count (chat template applied for messages) where it offers one, else an estimate.

        vLLM and SGLang: /tokenize; llama.cpp: /apply-template then /tokenize; others: one token per 4
        characters of the prompt or of the messages as "role: content" lines.
        """
        dialect = self._profile.dialect
        if dialect == "vllm":
            body: dict[str, Any] = {"model": self._profile.model}
            if input.messages is None:
                body["prompt"] = input.prompt or ""
            else:
                body.update(messages=message_dicts(input.messages), add_generation_prompt=True)
            return int((await self._post_json("/tokenize", body))["count"])
        if dialect == "llamacpp":
            prompt = input.prompt or ""
            if input.messages is not None:
                prompt = (await self._post_json("/apply-template", {"messages": message_dicts(input.messages)}))[
                    "prompt"
                ]
            return len((await self._post_json("/tokenize", {"content": prompt, "add_special": True}))["tokens"])
        text = input.prompt if input.messages is None else plain_chat_text(input.messages)
        return estimate_tokens(text or "")

    async def _post_json(self, path: str, body: dict[str, Any]) -> Any:
        response = await self._request("POST", path, body)
        if response.status_code != 200:
            raise error_from_status(response.status_code, _message(response))
        return response.json()

    def generate(self, request: Request) -> AsyncGenerator[Token | Completion, None]:
        """Stream from the server, stop sequences cut from the output; closing this iterator closes the HTTP
        stream, which stops the server's generation."""
        return cut_stop_sequences(self._stream(request), request, self.count_tokens)

    async def _stream(self, request: Request) -> AsyncGenerator[Token | Completion, None]:
        """The server's own stream (the stops it was not sent still in it)."""
        check_adapter(request.adapter, self._info.adapters)
        chat = request.input.messages is not None
        body = request_body(
            request, dialect=self._profile.dialect, model=self._profile.model, adapters=self._adapters, chat=chat
        )
        stream: Any = None
        try:
            if request.input.messages is not None:
                stream = await self._client.chat.completions.create(
                    messages=message_dicts(request.input.messages),  # type: ignore[arg-type]
                    **body,
                )
            else:
                stream = await self._client.completions.create(prompt=request.input.prompt or "", **body)
            accumulator = StreamAccumulator(request.parameters)
            async for chunk in stream:
                for token in accumulator.feed(chunk):
                    yield token
            yield accumulator.completion()
        except ServiceError:
            raise
        except Exception as exc:
            raise map_error(exc, self._api, request.adapter) from exc
        finally:
            if stream is not None:
                await stream.close()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.close()
        await self._http.aclose()


def map_error(exc: BaseException, url: str, adapter: str = "") -> ServiceError:
    """The service error for an exception raised by the openai SDK or httpx."""
    if isinstance(exc, openai.APIStatusError):
        body = exc.body if isinstance(exc.body, dict) else {}
        return error_from_status(
            exc.status_code, _error_text(exc), adapter=adapter, error_type=str(body.get("type", ""))
        )
    if isinstance(exc, openai.APITimeoutError | httpx.TimeoutException):
        return BackendUnavailable(f"the model server at {url} did not answer in time: {exc}")
    if isinstance(exc, openai.APIConnectionError | httpx.TransportError):  # refused, reset, closed mid-stream
        return BackendUnavailable(f"the model server at {url} is unreachable: {exc!r}")
    if isinstance(exc, openai.APIError):  # an error event in the stream
        return BackendError(f"the model server failed: {exc.message}")
    return BackendError(f"the model server call failed: {exc!r}")


def _error_text(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        return str(body.get("message") or body)
    return exc.message


def _message(response: httpx.Response) -> str:
    """The message of an error body: OpenAI's `{"error": {"message"}}`, vLLM's older `{"message"}`, or text."""
    try:
        payload = response.json()
    except ValueError:
        return response.text
    error = payload.get("error", payload) if isinstance(payload, dict) else payload
    return str(error.get("message", error) if isinstance(error, dict) else error)
