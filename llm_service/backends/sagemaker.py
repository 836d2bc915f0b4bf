"""SageMaker backend: a SageMaker real-time endpoint running the Hugging Face TGI container, streamed.

`invoke_endpoint_with_response_stream` returns an event stream whose PayloadParts carry TGI's SSE bytes
(a line may be split across parts). boto3 blocks, so each generation runs the call and the event-stream
iteration on its own thread (not the default executor, which long streams would starve) and hands parts
to the event loop through a bounded queue: a slow client makes the thread wait, and with it the HTTP read.

Health follows what the endpoint can serve (see SERVING_ENDPOINT_STATUSES), from DescribeEndpoint answers
that are shared by concurrent checks and reused for `status_ttl_s`. The token limits are the ones the
endpoint was deployed with (the TGI container's MAX_INPUT_TOKENS / MAX_TOTAL_TOKENS, read at start through
DescribeEndpoint → DescribeEndpointConfig → DescribeModel, or DescribeInferenceComponent → DescribeModel),
unless set explicitly; the configured fallbacks apply when the deployment does not say.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, replace
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
from llm_service.stops import cut_stop_sequences
from llm_service.types import Completion, GenerationInput, ModelInfo, Request, Token

log = logging.getLogger(__name__)

_END = object()

# Endpoint statuses in which invocations are answered. While Updating (UpdateEndpoint's blue/green switch,
# which `llm_service.deploy up` sends), SystemUpdating (patching) and RollingBack the old fleet keeps
# serving; UpdateRollbackFailed leaves it in service with a mix of both configs. Creating, OutOfService,
# Deleting and Failed do not serve.
SERVING_ENDPOINT_STATUSES = frozenset(
    {"InService", "Updating", "SystemUpdating", "RollingBack", "UpdateRollbackFailed"}
)
# An inference component keeps its current copies serving while UpdateInferenceComponent rolls out new ones.
SERVING_COMPONENT_STATUSES = frozenset({"InService", "Updating"})
# PayloadParts one stream may hold between the worker thread and the consumer (a TGI event is one or a
# few parts): beyond, the worker waits, and TCP's flow control slows the endpoint's writes.
STREAM_BUFFER_PARTS = 64


@dataclass(frozen=True, slots=True)
class EndpointStatus:
    """What DescribeEndpoint (and DescribeInferenceComponent) said."""

    endpoint: str
    component: str | None = None

    @property
    def serving(self) -> bool:
        """True when the endpoint (and its component) answers invocations in this state."""
        return self.endpoint in SERVING_ENDPOINT_STATUSES and (
            self.component is None or self.component in SERVING_COMPONENT_STATUSES
        )

    def __str__(self) -> str:
        return self.endpoint if self.component is None else f"{self.endpoint}, its component {self.component}"


class SageMakerBackend:
    """A SageMaker endpoint (optionally one inference component of it) serving TGI's API.

    Credentials and region come the usual boto3 way (env, profile, instance role) or from `session`.
    `endpoint_url` overrides where both the runtime and the control-plane calls go (tests, local fakes).
    Health and start use DescribeEndpoint (a status in SERVING_ENDPOINT_STATUSES), which needs
    `sagemaker:DescribeEndpoint` besides `sagemaker:InvokeEndpoint`; one answer serves every check for
    `status_ttl_s`, and concurrent checks share one call. With `check_endpoint_status=False` they only
    check that the clients are built, and the first generation reveals a missing endpoint.

    `max_input_tokens` / `max_total_tokens` override the deployed limits; `fallback_max_*` apply when the
    deployment cannot be read (no `sagemaker:DescribeEndpointConfig` / `DescribeModel` permission, or a
    container without those variables).
    """

    def __init__(
        self,
        endpoint_name: str,
        *,
        inference_component_name: str | None = None,
        region: str | None = None,
        endpoint_url: str | None = None,
        model_id: str = "",
        max_input_tokens: int | None = None,
        max_total_tokens: int | None = None,
        fallback_max_input_tokens: int = 2048,
        fallback_max_total_tokens: int = 4096,
        tokenizer_path: str | None = None,
        session: boto3.session.Session | None = None,
        check_endpoint_status: bool = True,
        status_ttl_s: float = 30.0,
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
        self._limits_override = (max_input_tokens, max_total_tokens)
        self._status_ttl_s = status_ttl_s
        self._status: EndpointStatus | None = None
        self._status_error: ServiceError | None = None
        self._status_at = -math.inf  # time.monotonic() of the last answer (or error)
        self._status_call: asyncio.Task[EndpointStatus] | None = None
        # No SDK retry once a stream has started (it is not resumable); max_attempts covers refused
        # connections and throttling before it. timeout_s bounds each wait between two reads.
        self._config = Config(
            connect_timeout=min(timeout_s, 10.0),
            read_timeout=timeout_s,
            retries={"mode": "standard", "total_max_attempts": max_attempts},
            max_pool_connections=64,  # one connection per concurrent stream
        )
        extra = {"endpoint": endpoint_name, "inference_component": inference_component_name or ""}
        self._info = ModelInfo(
            model_id or endpoint_name,
            "sagemaker",
            max_input_tokens or fallback_max_input_tokens,
            max_total_tokens or fallback_max_total_tokens,
            extra=extra,
        )
        self._runtime: Any = None
        self._control: Any = None
        self._tokenizer: Any = None

    async def start(self) -> None:
        """Build the boto3 clients (and the tokenizer) off the loop, check the endpoint serves, read its limits."""
        try:
            await asyncio.to_thread(self._build)
        except BotoCoreError as exc:  # no region, broken profile...
            raise BackendUnavailable(f"cannot configure the SageMaker client: {exc}") from exc
        if self._check_status:
            status = await self._endpoint_status()
            if not status.serving:
                raise BackendUnavailable(f"SageMaker endpoint {self._endpoint} is {status}: it does not serve")
        if None in self._limits_override:
            await asyncio.to_thread(self._apply_deployed_limits)

    def _build(self) -> None:
        session = self._session or boto3.session.Session()
        where = {"region_name": self._region, "endpoint_url": self._endpoint_url}
        self._runtime = session.client("sagemaker-runtime", **where, config=self._config)  # type: ignore[call-overload]
        self._control = session.client("sagemaker", **where, config=self._config)  # type: ignore[call-overload]
        self._info = replace(self._info, extra={**self._info.extra, "region": self._runtime.meta.region_name or ""})
        if self._tokenizer_path:
            from tokenizers import Tokenizer

            try:
                self._tokenizer = Tokenizer.from_file(self._tokenizer_path)
            except Exception as exc:  # tokenizers raises a bare Exception
                raise BackendUnavailable(f"cannot load the tokenizer {self._tokenizer_path}: {exc}") from exc

    def _apply_deployed_limits(self) -> None:
        """Limits from the deployed container's environment, where no explicit setting overrides them."""
        try:
            source, deployed = self._deployed_limits()
        except Exception as exc:  # a missing permission must not keep the service from serving
            log.warning("cannot read the SageMaker deployment's token limits, using the settings: %s", exc)
            source, deployed = "settings (deployment not readable)", (None, None)
        if deployed == (None, None) and not source.startswith("settings"):
            source = f"settings ({source} sets no limits)"
        override = self._limits_override
        max_input = override[0] or deployed[0] or self._info.max_input_tokens
        max_total = override[1] or deployed[1] or self._info.max_total_tokens
        if override != (None, None):
            source = f"{source}, overridden by settings"
        extra = {**self._info.extra, "limits_from": source}
        self._info = replace(self._info, max_input_tokens=max_input, max_total_tokens=max_total, extra=extra)
        log.info("SageMaker token limits", extra={"max_input_tokens": max_input, "max_total_tokens": max_total})

    def _deployed_limits(self) -> tuple[str, tuple[int | None, int | None]]:
        """(where from, (max input, max total)) as the TGI container was deployed; the smallest over variants."""
        envs: list[dict[str, str]] = []
        if self._component:
            spec = self._control.describe_inference_component(InferenceComponentName=self._component)["Specification"]
            models = [spec["ModelName"]] if spec.get("ModelName") else []
            inline = (spec.get("Container") or {}).get("Environment") or {}
        else:
            config = self._control.describe_endpoint(EndpointName=self._endpoint)["EndpointConfigName"]
            variants = self._control.describe_endpoint_config(EndpointConfigName=config)["ProductionVariants"]
            models = [v["ModelName"] for v in variants if v.get("ModelName")]
            inline = {}
        for name in models:
            model = self._control.describe_model(ModelName=name)
            env: dict[str, str] = {}
            for container in [model.get("PrimaryContainer") or {}, *(model.get("Containers") or [])]:
                env |= container.get("Environment") or {}
            envs.append(env | inline)
        if not models and inline:
            envs.append(inline)
        inputs = [n for e in envs if (n := _env_int(e, "MAX_INPUT_TOKENS", "MAX_INPUT_LENGTH")) is not None]
        totals = [n for e in envs if (n := _env_int(e, "MAX_TOTAL_TOKENS")) is not None]
        source = f"deployed model {', '.join(models)}" if models else "deployed component"
        return source, (min(inputs, default=None), min(totals, default=None))

    async def _endpoint_status(self) -> EndpointStatus:
        """The endpoint's (and component's) status: reused for status_ttl_s, one DescribeEndpoint at a time.

        Throttling keeps the last answer: every replica polls the same account-wide API, and taking the
        tier out of service because the control plane is busy would turn a throttle into an outage.
        """
        if time.monotonic() - self._status_at < self._status_ttl_s:
            if self._status_error is not None:
                raise self._status_error
            if self._status is not None:
                return self._status
        if self._status_call is None:
            self._status_call = asyncio.create_task(self._refresh_status())
            self._status_call.add_done_callback(_retrieve)
        # Shielded: a caller's timeout or cancel must not cancel the call the others wait on.
        return await asyncio.shield(self._status_call)

    async def _refresh_status(self) -> EndpointStatus:
        def describe() -> EndpointStatus:
            endpoint = str(self._control.describe_endpoint(EndpointName=self._endpoint)["EndpointStatus"])
            if not self._component:
                return EndpointStatus(endpoint)
            component = self._control.describe_inference_component(InferenceComponentName=self._component)
            return EndpointStatus(endpoint, str(component["InferenceComponentStatus"]))

        try:
            status = await asyncio.to_thread(describe)
            self._status, self._status_error = status, None
            return status
        except Exception as exc:
            error = _map_error(exc, self._endpoint)
            if isinstance(error, Overloaded) and self._status is not None:
                log.warning("DescribeEndpoint throttled, keeping the last status %s: %s", self._status, error)
                return self._status
            self._status_error = error
            raise error from exc
        finally:
            self._status_at = time.monotonic()
            self._status_call = None

    def info(self) -> ModelInfo:
        """The model and its limits: explicit settings, else the deployed container's, else the fallbacks."""
        return self._info

    async def check_health(self) -> bool:
        """True when the endpoint (and component) is in a state that serves; only "started" without checks."""
        if self._runtime is None:
            return False
        if not self._check_status:
            return True
        try:
            return (await self._endpoint_status()).serving
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

    def generate(self, request: Request) -> AsyncGenerator[Token | Completion, None]:
        """Stream from the endpoint, stop sequences cut from the output; closing this iterator closes the
        HTTP stream, stopping the model."""
        return cut_stop_sequences(self._stream(request), request, self.count_tokens)

    async def _stream(self, request: Request) -> AsyncGenerator[Token | Completion, None]:
        """The TGI container's own stream (a matched stop sequence still in it)."""
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
        pump = StreamPump(self._runtime, call, self._endpoint, name=f"sagemaker-stream-{request.request_id}")
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


class StreamPump:
    """Runs one blocking streaming invoke on its own thread and hands PayloadPart bytes to the event loop.

    At most `max_buffered` parts wait for the consumer (plus the end marker or an error): the worker takes
    a credit before handing a part over and the consumer returns it after taking one, so a slow client
    makes the worker wait instead of buffering the whole generation in memory.
    """

    def __init__(
        self, client: Any, call: dict[str, Any], endpoint: str, *, name: str, max_buffered: int = STREAM_BUFFER_PARTS
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._endpoint = endpoint
        self.max_buffered = max_buffered
        self.high_water = 0  # the most parts that ever waited in the queue
        self._room = threading.Semaphore(max_buffered)
        self._lock = threading.Lock()
        self._body: Any = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, args=(client, call), name=name, daemon=True)
        self._thread.start()

    @property
    def buffered(self) -> int:
        """Items waiting for the consumer now."""
        return self._queue.qsize()

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
                if part is None:
                    continue
                self._room.acquire()  # released by the consumer, or by close()
                if self._closed:
                    return
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
            self._loop.call_soon_threadsafe(self._enqueue, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass

    def _enqueue(self, item: Any) -> None:
        self._queue.put_nowait(item)
        if isinstance(item, bytes):
            self.high_water = max(self.high_water, self._queue.qsize())

    async def parts(self) -> AsyncIterator[bytes]:
        """PayloadPart bytes as they arrive; boto3 errors come out as service errors."""
        while True:
            item = await self._queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise _map_error(item, self._endpoint) from item
            self._room.release()
            yield item

    def close(self) -> None:
        """Stop the stream: wake the worker's blocked read (or wait for room) and let it close the connection."""
        with self._lock:
            self._closed = True
            body = self._body
        self._room.release(self.max_buffered)  # a worker waiting for room wakes, sees closed and stops
        if body is None:
            return  # still invoking: the worker closes the body as soon as the call returns
        # botocore's EventStream keeps the urllib3 response in _raw_stream; its shutdown() (urllib3 2.3+)
        # ends a read blocked in the worker at once, where close() alone waits for the next part.
        try:
            body._raw_stream.shutdown()
        except (AttributeError, ValueError, RuntimeError, OSError):
            body.close()


def _env_int(env: dict[str, str], *names: str) -> int | None:
    """The first of `names` set in a container environment, as a positive int."""
    for name in names:
        try:
            value = int(env[name])
        except (KeyError, ValueError):
            continue
        if value > 0:
            return value
    return None


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Marks a shared task's exception as seen (every waiter may have been cancelled)."""
    if not task.cancelled():
        task.exception()


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
