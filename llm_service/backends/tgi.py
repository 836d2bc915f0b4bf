"""TGI backend: a Text Generation Inference server over HTTP, through huggingface_hub's AsyncInferenceClient.

Prompts go to TGI's generate stream (`text_generation(stream=True, details=True)`), messages to its
OpenAI-style chat route (`chat_completion(stream=True)`). The payloads themselves (parameters, events,
finish reasons, error bodies) are in tgi_payload, which the SageMaker backend shares.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

import httpx2
from huggingface_hub import AsyncInferenceClient, ChatCompletionInputStreamOptions
from huggingface_hub.errors import (
    HfHubHTTPError,
    InferenceTimeoutError,
    OverloadedError,
    TextGenerationError,
    ValidationError,
)

from llm_service.backends.tgi_payload import (
    ChatAccumulator,
    chat_parameters,
    error_from_status,
    estimate_tokens,
    generate_parameters,
    message_dicts,
    plain_chat_text,
    tgi_items,
)
from llm_service.errors import BackendError, BackendUnavailable, InvalidArgument, Overloaded, ServiceError
from llm_service.stops import cut_stop_sequences
from llm_service.types import Completion, GenerationInput, ModelInfo, Request, Token


class _CallClient(AsyncInferenceClient):
    """An AsyncInferenceClient for one call, on the backend's shared connection pool.

    Why: the stock client (1) enters every streamed response into its exit stack and closes it only in
    `close()`, so a client kept for the process would never close an abandoned stream (TGI would go on
    generating) and would accumulate responses; (2) builds its httpx client with a hook that refuses every
    URL when HF_HUB_OFFLINE=1, which this stack sets, though a TGI server is not the Hub. Closing this
    per-call client closes exactly its own response; the pool stays open.
    """

    def __init__(self, http: httpx2.AsyncClient, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._pool = http

    async def _get_async_client(self) -> httpx2.AsyncClient:
        return self._pool


class TgiBackend:
    """A TGI server (local container, Inference Endpoint...) reached at `url`."""

    def __init__(
        self,
        url: str,
        *,
        model_id: str = "",
        max_input_tokens: int = 2048,
        max_total_tokens: int = 4096,
        timeout_s: float = 60.0,
        headers: dict[str, str] | None = None,
        adapters: tuple[str, ...] = (),
    ) -> None:
        self._url = url.rstrip("/")
        self._adapters = tuple(adapters)  # LoRA adapter ids the server loaded (TGI's LORA_ADAPTERS)
        self._timeout_s = timeout_s
        self._headers = dict(headers or {})
        self._info = ModelInfo(
            model_id or self._url, "tgi", max_input_tokens, max_total_tokens, adapters=self._adapters
        )
        self._model_id = model_id
        # timeout_s bounds connecting and each wait between two reads, not a whole generation.
        self._http = httpx2.AsyncClient(
            headers=self._headers,
            timeout=httpx2.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
            event_hooks={"response": [_read_error_body]},
        )
        self._chat_tokenize = True  # False once the server answered that it has no /chat_tokenize

    async def start(self) -> None:
        """Read the model and its limits from TGI's /info; BackendUnavailable when TGI cannot be reached."""
        try:
            response = await self._http.get(f"{self._url}/info")
        except httpx2.TransportError as exc:
            raise BackendUnavailable(f"TGI at {self._url} is unreachable: {exc!r}") from exc
        if response.status_code != 200:
            raise BackendUnavailable(f"TGI at {self._url} answered /info with HTTP {response.status_code}")
        info = response.json()
        # The server's limits win: it rejects anything beyond them. Older TGI names the input limit
        # max_input_length.
        max_input = info.get("max_input_tokens") or info.get("max_input_length") or self._info.max_input_tokens
        self._info = ModelInfo(
            model_id=self._model_id or info.get("model_id") or self._url,
            backend="tgi",
            max_input_tokens=int(max_input),
            max_total_tokens=int(info.get("max_total_tokens") or self._info.max_total_tokens),
            model_revision=info.get("model_sha") or "",
            adapters=self._adapters,
        )

    def info(self) -> ModelInfo:
        """The served model and its limits (from /info after start)."""
        return self._info

    async def check_health(self) -> bool:
        """True when TGI's /health answers 200 (TGI checks there that its model shards can generate)."""
        try:
            response = await self._http.get(f"{self._url}/health")
        except httpx2.HTTPError:
            return False
        return response.status_code == 200

    async def count_tokens(self, input: GenerationInput) -> int:
        """TGI's own count: /tokenize for a prompt, /chat_tokenize (chat template applied) for messages.

        Fallbacks: a TGI without /chat_tokenize (before 2.2) counts the messages as "role: content" lines
        through /tokenize, which misses the template's few special tokens; a TGI without a fast tokenizer
        (404 on /tokenize) gets the estimate of one token per 4 characters.
        """
        if input.messages is None:
            return await self._tokenize(input.prompt or "")
        if self._chat_tokenize:
            response = await self._post("/chat_tokenize", {"messages": message_dicts(input.messages)})
            if response.status_code == 200:
                return len(response.json()["tokenize_response"])
            if response.status_code not in (404, 405):
                raise _http_status_error(response)
            self._chat_tokenize = False
        return await self._tokenize(plain_chat_text(input.messages))

    async def _tokenize(self, text: str) -> int:
        response = await self._post("/tokenize", {"inputs": text})
        if response.status_code == 404:
            return estimate_tokens(text)
        if response.status_code != 200:
            raise _http_status_error(response)
        return len(response.json())

    async def _post(self, path: str, body: dict[str, Any]) -> httpx2.Response:
        try:
            return await self._http.post(f"{self._url}{path}", json=body)
        except httpx2.TransportError as exc:
            raise BackendUnavailable(f"TGI at {self._url} is unreachable: {exc!r}") from exc

    def generate(self, request: Request) -> AsyncGenerator[Token | Completion, None]:
        """Stream from TGI, stop sequences cut from the output; closing this iterator closes the HTTP stream,
        which stops TGI's generation."""
        return cut_stop_sequences(self._stream(request), request, self.count_tokens)

    async def _stream(self, request: Request) -> AsyncGenerator[Token | Completion, None]:
        """TGI's own stream (a matched stop sequence still in it)."""
        client = _CallClient(self._http, base_url=self._url, timeout=self._timeout_s, headers=self._headers)
        p = request.parameters
        try:
            if request.input.messages is None:
                stream = await client.text_generation(
                    request.input.prompt or "",
                    stream=True,
                    details=True,
                    decoder_input_details=False,  # TGI rejects it on streams
                    adapter_id=request.adapter or None,
                    **generate_parameters(p),
                )
                finished = False
                async with aclosing(stream) as events:  # type: ignore[type-var]
                    async for event in events:
                        for item in tgi_items(event.token, event.details, event.generated_text, p.return_logprobs):
                            finished = isinstance(item, Completion)
                            yield item
                if not finished:
                    raise BackendError("the TGI stream ended before the generation finished")
            else:
                chunks = await client.chat_completion(
                    message_dicts(request.input.messages),  # type: ignore[arg-type]
                    # TGI's chat route takes `model` as the adapter id, except "tgi": the base model.
                    model=request.adapter or "tgi",
                    stream=True,
                    stream_options=ChatCompletionInputStreamOptions(include_usage=True),
                    **chat_parameters(p),
                )
                chat = ChatAccumulator(p)
                async with aclosing(chunks) as events:  # type: ignore[type-var]
                    async for chunk in events:
                        for token in chat.feed(chunk):
                            yield token
                yield chat.completion()
        except ServiceError:
            raise
        except Exception as exc:
            raise map_error(exc, self._url) from exc
        finally:
            await client.close()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()


def map_error(exc: BaseException, url: str) -> ServiceError:
    """The service error for an exception raised by AsyncInferenceClient or httpx."""
    if isinstance(exc, ValidationError):
        return InvalidArgument({"parameters": str(exc)})
    if isinstance(exc, OverloadedError):
        return Overloaded(f"TGI is overloaded: {exc}")
    if isinstance(exc, TextGenerationError):  # an SSE error event: generation or incomplete generation
        return BackendError(f"TGI failed: {exc}")
    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        return error_from_status(exc.response.status_code, exc.response.text)
    if isinstance(exc, InferenceTimeoutError | httpx2.TimeoutException):
        return BackendUnavailable(f"TGI at {url} did not answer in time: {exc}")
    if isinstance(exc, httpx2.TransportError):  # refused, reset, closed mid-stream
        return BackendUnavailable(f"TGI at {url} is unreachable: {exc!r}")
    return BackendError(f"TGI call failed: {exc!r}")


def _http_status_error(response: httpx2.Response) -> ServiceError:
    return error_from_status(response.status_code, response.text)


async def _read_error_body(response: httpx2.Response) -> None:
    # Error bodies of streamed responses must be read before the client parses them.
    if response.status_code >= 400:
        await response.aread()
