"""The SageMaker response stream: a blocking boto3 event stream pumped to the event loop, and its SSE lines.

`invoke_endpoint_with_response_stream` returns an event stream whose PayloadParts carry TGI's SSE bytes
(a line may be split across parts). boto3 blocks, so each generation runs the call and the event-stream
iteration on its own thread (not the default executor, which long streams would starve) and hands parts
to the event loop through a bounded queue: a slow client makes the thread wait, and with it the HTTP read.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from typing import Any

from llm_service.backends.sagemaker_errors import map_error
from llm_service.backends.tgi_payload import error_from_tgi
from llm_service.errors import BackendError, InvalidArgument, Overloaded, ServiceError

_END = object()

# PayloadParts one stream may hold between the worker thread and the consumer (a TGI event is one or a
# few parts): beyond, the worker waits, and TCP's flow control slows the endpoint's writes.
STREAM_BUFFER_PARTS = 64


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
                raise map_error(item, self._endpoint) from item
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


def parse_event(data: str) -> dict[str, Any]:
    """One SSE `data:` payload as a TGI event or an OpenAI chunk; an error event raises its service error."""
    try:
        event = json.loads(data)
    except ValueError as exc:
        raise BackendError(f"the SageMaker endpoint sent a malformed event: {data[:200]!r}") from exc
    if not isinstance(event, dict):
        raise BackendError(f"the SageMaker endpoint sent an unexpected event: {data[:200]!r}")
    error = event.get("error")
    if isinstance(error, dict):  # vLLM (OpenAI): {"error": {"message", "type", "code"}}
        raise openai_error(error)
    if error is not None:  # TGI reports errors after the stream started as an SSE event
        raise error_from_tgi(str(error), event.get("error_type"))
    return event


def openai_error(error: dict[str, Any]) -> ServiceError:
    """The service error for an OpenAI-style error object (vLLM's stream error events and error bodies)."""
    message = str(error.get("message") or error)
    kind, code = str(error.get("type") or ""), error.get("code")
    if code == 400 or kind in ("BadRequestError", "invalid_request_error"):
        return InvalidArgument({"parameters": message})
    if code == 429 or kind in ("RateLimitError", "TooManyRequests"):
        return Overloaded(f"the model server is overloaded: {message}")
    return BackendError(f"the model server failed ({kind or code}): {message}")
