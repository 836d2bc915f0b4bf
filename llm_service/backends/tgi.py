"""TGI backend: a Text Generation Inference server over HTTP, through huggingface_hub's AsyncInferenceClient.

Prompts go to TGI's generate stream (`text_generation(stream=True, details=True)`), messages to its
OpenAI-style chat route (`chat_completion(stream=True)`). The helpers at the bottom (parameters, event
parsing, error mapping) also serve the SageMaker backend, which carries the same TGI payloads.
"""

from __future__ import annotations

import json
import math
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

from llm_service.errors import BackendError, BackendUnavailable, InvalidArgument, Overloaded, ServiceError
from llm_service.stops import cut_stop_sequences
from llm_service.types import (
    Completion,
    FinishReason,
    GenerationInput,
    Message,
    ModelInfo,
    Parameters,
    Request,
    Token,
)

# TGI's default --max-stop-sequences: more stops in a request are refused (422).
SERVER_MAX_STOP_SEQUENCES = 4

_TGI_FINISH = {
    "length": FinishReason.LENGTH,
    "eos_token": FinishReason.END_OF_SEQUENCE,
    "stop_sequence": FinishReason.STOP_SEQUENCE,
}


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
    ) -> None:
        self._url = url.rstrip("/")
        self._timeout_s = timeout_s
        self._headers = dict(headers or {})
        self._info = ModelInfo(model_id or self._url, "tgi", max_input_tokens, max_total_tokens)
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
            extra={"url": self._url, "tgi_version": str(info.get("version") or "")},
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


# -- TGI payloads, shared with the SageMaker backend -------------------------------------------------------


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
        if self._finish == "length":
            finish = FinishReason.LENGTH
        elif any(text.endswith(s) for s in self._p.stop_sequences):
            finish = FinishReason.STOP_SEQUENCE
        else:
            finish = FinishReason.END_OF_SEQUENCE
        usage = self._usage
        return Completion(
            finish_reason=finish,
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
