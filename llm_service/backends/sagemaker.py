"""SageMaker backend: a SageMaker real-time endpoint running the Hugging Face TGI container, streamed.

`invoke_endpoint_with_response_stream` returns an event stream whose PayloadParts carry TGI's SSE bytes
(a line may be split across parts). boto3 blocks, so each generation runs the call and the event-stream
iteration on its own thread (not the default executor, which long streams would starve) and hands parts
to the event loop through an asyncio.Queue.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import replace
from typing import Any

import boto3
import urllib3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EventStreamError

from llm_service.backends.tgi import (
    ChatAccumulator,
    chat_parameters,
    error_from_status,
    error_from_tgi,
    estimate_tokens,
    generate_parameters,
    message_dicts,
    plain_chat_text,
    tgi_items,
)
from llm_service.errors import BackendError, BackendUnavailable, InvalidArgument, Overloaded, ServiceError
from llm_service.types import Completion, GenerationInput, ModelInfo, Request, Token

log = logging.getLogger(__name__)

_END = object()


class SageMakerBackend:
    """A SageMaker endpoint (optionally one inference component of it) serving TGI's API.

    Credentials and region come the usual boto3 way (env, profile, instance role) or from `session`.
    `endpoint_url` overrides where both the runtime and the control-plane calls go (tests, local fakes).
    Health and start use DescribeEndpoint (status InService), which needs `sagemaker:DescribeEndpoint`
    besides `sagemaker:InvokeEndpoint`; with `check_endpoint_status=False` they only check that the
    clients are built, and the first generation reveals a missing endpoint.
    """

    def __init__(
        self,
        endpoint_name: str,
        *,
        inference_component_name: str | None = None,
        region: str | None = None,
        endpoint_url: str | None = None,
        model_id: str = "",
        max_input_tokens: int = 2048,
        max_total_tokens: int = 4096,
        tokenizer_path: str | None = None,
        session: boto3.session.Session | None = None,
        check_endpoint_status: bool = True,
        timeout_s: float = 60.0,
        max_attempts: int = 2,
    ) -> None:
        self._endpoint = endpoint_name
        self._component = inference_component_name
        self._region = region
        self._endpoint_url = endpoint_url
        self._tokenizer_path = tokenizer_path
        self._session = session
        self._check_status = check_endpoint_status
        # No SDK retry once a stream has started (it is not resumable); max_attempts covers refused
        # connections and throttling before it. timeout_s bounds each wait between two reads.
        self._config = Config(
            connect_timeout=min(timeout_s, 10.0),
            read_timeout=timeout_s,
            retries={"mode": "standard", "total_max_attempts": max_attempts},
            max_pool_connections=64,  # one connection per concurrent stream
        )
        extra = {"endpoint": endpoint_name, "inference_component": inference_component_name or ""}
        self._info = ModelInfo(model_id or endpoint_name, "sagemaker", max_input_tokens, max_total_tokens, extra=extra)
        self._runtime: Any = None
        self._control: Any = None
        self._tokenizer: Any = None

    async def start(self) -> None:
        """Build the boto3 clients (and the tokenizer) off the loop, then check the endpoint is InService."""
        try:
            await asyncio.to_thread(self._build)
        except BotoCoreError as exc:  # no region, broken profile...
            raise BackendUnavailable(f"cannot configure the SageMaker client: {exc}") from exc
        if self._check_status:
            status = await self._endpoint_status()
            if status != "InService":
                raise BackendUnavailable(f"SageMaker endpoint {self._endpoint} is {status}, not InService")

    def _build(self) -> None:
        session = self._session or boto3.session.Session()
        where = {"region_name": self._region, "endpoint_url": self._endpoint_url}
        self._runtime = session.client("sagemaker-runtime", **where, config=self._config)  # type: ignore[call-overload]
        if self._check_status:
            self._control = session.client("sagemaker", **where, config=self._config)  # type: ignore[call-overload]
        self._info = replace(self._info, extra={**self._info.extra, "region": self._runtime.meta.region_name or ""})
        if self._tokenizer_path:
            from tokenizers import Tokenizer

            try:
                self._tokenizer = Tokenizer.from_file(self._tokenizer_path)
            except Exception as exc:  # tokenizers raises a bare Exception
                raise BackendUnavailable(f"cannot load the tokenizer {self._tokenizer_path}: {exc}") from exc

    async def _endpoint_status(self) -> str:
        """The endpoint's status, or the inference component's when it is not InService."""

        def describe() -> str:
            status = self._control.describe_endpoint(EndpointName=self._endpoint)["EndpointStatus"]
            if status == "InService" and self._component:
                component = self._control.describe_inference_component(InferenceComponentName=self._component)
                status = component["InferenceComponentStatus"]
            return str(status)

        try:
            return await asyncio.to_thread(describe)
        except Exception as exc:
            raise _map_error(exc, self._endpoint) from exc

    def info(self) -> ModelInfo:
        """The configured model and limits (SageMaker does not report TGI's /info)."""
        return self._info

    async def check_health(self) -> bool:
        """True when the endpoint (and component) is InService; only "started" without status checks."""
        if self._runtime is None:
            return False
        if not self._check_status:
            return True
        try:
            return await self._endpoint_status() == "InService"
        except ServiceError as exc:
            log.warning("SageMaker health check failed: %s", exc)
            return False

    async def count_tokens(self, input: GenerationInput) -> int:
        """Tokens by the configured tokenizer.json, else the 4-characters-per-token estimate.

        SageMaker exposes no tokenize route. Messages are counted as "role: content" lines (no chat
        template at hand), which misses the template's few special tokens.
        """
        text = (input.prompt or "") if input.messages is None else plain_chat_text(input.messages)
        if self._tokenizer is None:
            return estimate_tokens(text)
        encoding = await asyncio.to_thread(self._tokenizer.encode, text)
        return len(encoding.ids)

    async def generate(self, request: Request) -> AsyncGenerator[Token | Completion, None]:
        """Stream from the endpoint; closing this iterator closes the HTTP stream, stopping the model."""
        if self._runtime is None:
            raise BackendUnavailable("the SageMaker backend is not started")
        p = request.parameters
        chat = ChatAccumulator(p) if request.input.messages is not None else None
        if chat is None:
            payload: dict[str, Any] = {
                "inputs": request.input.prompt or "",
                "parameters": {**generate_parameters(p), "details": True},
                "stream": True,
            }
        else:
            payload = {
                "messages": message_dicts(request.input.messages or ()),
                **chat_parameters(p),
                "stream": True,
                "stream_options": {"include_usage": True},
            }
        call = {"EndpointName": self._endpoint, "Body": json.dumps(payload), "ContentType": "application/json"}
        if self._component:
            call["InferenceComponentName"] = self._component
        pump = _StreamPump(self._runtime, call, self._endpoint, name=f"sagemaker-stream-{request.request_id}")
        lines = SseLines()
        finished = False
        try:
            async for part in pump.parts():
                for data in lines.feed(part):
                    if data == "[DONE]":
                        continue
                    event = _parse_event(data)
                    if chat is not None:
                        for token in chat.feed(event):
                            yield token
                        continue
                    for item in tgi_items(
                        event.get("token"), event.get("details"), event.get("generated_text"), p.return_logprobs
                    ):
                        finished = isinstance(item, Completion)
                        yield item
            if chat is not None:
                yield chat.completion()
            elif not finished:
                raise BackendError("the SageMaker stream ended before the generation finished")
        finally:
            pump.close()

    async def aclose(self) -> None:
        """Close the clients' connection pools."""
        for client in (self._runtime, self._control):
            if client is not None:
                await asyncio.to_thread(client.close)
        self._runtime = self._control = None


class SseLines:
    """Reassembles SSE `data:` payloads from byte chunks that may cut lines (and UTF-8 characters) anywhere."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[str]:
        """The `data:` payloads completed by this chunk, in order."""
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        out = []
        for raw in lines:
            line = raw.rstrip(b"\r")
            if line.startswith(b"data:"):
                out.append(line[5:].decode("utf-8").lstrip(" "))
        return out


class _StreamPump:
    """Runs one blocking streaming invoke on its own thread and hands PayloadPart bytes to the event loop."""

    def __init__(self, client: Any, call: dict[str, Any], endpoint: str, *, name: str) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._endpoint = endpoint
        self._lock = threading.Lock()
        self._body: Any = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, args=(client, call), name=name, daemon=True)
        self._thread.start()

    def _run(self, client: Any, call: dict[str, Any]) -> None:
        body = None
        try:
            body = client.invoke_endpoint_with_response_stream(**call)["Body"]
            with self._lock:
                self._body = body
                closed = self._closed
            if closed:
                return
            for event in body:
                part = event.get("PayloadPart")
                if part is not None:
                    self._put(part.get("Bytes", b""))
        except Exception as exc:  # handed to the consumer, unless it has gone
            if not self._closed:
                self._put(exc)
        finally:
            if body is not None:
                body.close()
            self._put(_END)

    def _put(self, item: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass

    async def parts(self) -> AsyncIterator[bytes]:
        """PayloadPart bytes as they arrive; boto3 errors come out as service errors."""
        while True:
            item = await self._queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise _map_error(item, self._endpoint) from item
            yield item

    def close(self) -> None:
        """Stop the stream: wake the worker's blocked read and let it close the connection."""
        with self._lock:
            self._closed = True
            body = self._body
        if body is None:
            return  # still invoking: the worker closes the body as soon as the call returns
        # botocore's EventStream keeps the urllib3 response in _raw_stream; its shutdown() (urllib3 2.3+)
        # ends a read blocked in the worker at once, where close() alone waits for the next part.
        try:
            body._raw_stream.shutdown()
        except (AttributeError, ValueError, RuntimeError, OSError):
            body.close()


def _parse_event(data: str) -> dict[str, Any]:
    try:
        event = json.loads(data)
    except ValueError as exc:
        raise BackendError(f"the SageMaker endpoint sent a malformed event: {data[:200]!r}") from exc
    if not isinstance(event, dict):
        raise BackendError(f"the SageMaker endpoint sent an unexpected event: {data[:200]!r}")
    if event.get("error") is not None:  # TGI reports errors after the stream started as an SSE event
        raise error_from_tgi(str(event["error"]), event.get("error_type"))
    return event


def _map_error(exc: BaseException, endpoint: str) -> ServiceError:
    """The service error for a boto3 / botocore / urllib3 exception."""
    if isinstance(exc, ServiceError):
        return exc
    if isinstance(exc, EventStreamError):  # mid-stream: ModelStreamError, InternalStreamFailure
        error = exc.response.get("Error", {})
        return BackendError(f"SageMaker stream failed ({error.get('Code')}): {error.get('Message')}")
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code, message = str(error.get("Code", "")), str(error.get("Message", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code == "ModelError":  # the TGI container answered an error status: judge by that status
            original = exc.response.get("OriginalStatusCode")
            status = original if isinstance(original, int) else 500
            return error_from_status(status, str(exc.response.get("OriginalMessage") or message))
        if code.startswith("Validation"):
            if "not found" in message.lower() or "could not find" in message.lower():
                return BackendUnavailable(f"SageMaker endpoint {endpoint} not found: {message}")
            return InvalidArgument({"parameters": message})
        if status == 429 or "Throttl" in code or code == "TooManyRequestsException":
            return Overloaded(f"SageMaker is throttling: {message}")
        if status in (401, 403):  # DescribeEndpoint denied: see check_endpoint_status
            return BackendUnavailable(f"not allowed to use SageMaker endpoint {endpoint} ({code}): {message}")
        if status == 503 or code == "ServiceUnavailable":
            return BackendUnavailable(f"SageMaker endpoint {endpoint} is unavailable ({code}): {message}")
        return BackendError(f"SageMaker failed ({code}): {message}")
    if isinstance(exc, BotoCoreError | urllib3.exceptions.HTTPError | OSError):
        # Refused, timed out, connection dropped mid-stream, no credentials.
        return BackendUnavailable(f"SageMaker endpoint {endpoint} is unreachable: {exc}")
    return BackendError(f"SageMaker call failed: {exc!r}")
