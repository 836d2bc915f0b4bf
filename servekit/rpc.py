"""Decorators for servicer methods: request ids, errors as rich statuses, and the requests-by-code metric.

Unary and streaming handlers are wrapped separately: a catch-all that awaits every handler would break
server-streaming RPCs (an async generator cannot be awaited).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from prometheus_client import Counter

from servekit.channels import NO_RETRY_METADATA
from servekit.decoding import Undecodable
from servekit.errors import DeadlineExceeded, InvalidArgument, ServiceError, to_status
from servekit.logs import (
    REQUEST_ID_KEY,
    TRACE_ID_KEY,
    metadata_value,
    request_id_var,
    resolve_request_id,
    sendable_request_id,
    trace_id_var,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
Unary = Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[T]]
Streaming = Callable[[Any, Any, grpc.aio.ServicerContext], AsyncIterator[T]]


class RpcKit:
    """Wraps handlers of one service (error domain, requests counter with labels method and code)."""

    def __init__(self, domain: str, requests: Counter):
        self.domain = domain
        self.requests = requests

    def _begin(self, request: Any, context: grpc.aio.ServicerContext) -> str:
        """Adopts the call's request id (and trace id) for its logs and calls, and echoes it as trailing metadata."""
        metadata = context.invocation_metadata()
        rid = resolve_request_id(getattr(request, "request_id", ""), metadata)
        request_id_var.set(rid)
        trace_id_var.set(metadata_value(metadata, TRACE_ID_KEY))
        context.set_trailing_metadata(((REQUEST_ID_KEY, rid),))
        return rid

    async def _fail(self, method: str, exc: BaseException, context: grpc.aio.ServicerContext, rid: str) -> None:
        if isinstance(exc, TimeoutError):
            exc = DeadlineExceeded("the deadline passed before the work finished")
        if not isinstance(exc, ServiceError):
            log.exception("unhandled error in %s", method)
            exc = ServiceError(f"internal error (request id {rid})")
        status = to_status(exc, self.domain)
        self.requests.labels(method, status.code.name).inc()
        # Our handler's answer is final: the caller's channel must not retry it (an UNAVAILABLE here means a
        # dependency is down, and our own channel to it has already retried). docs/reliability.md, "Retries".
        trailing = (*status.trailing_metadata, (REQUEST_ID_KEY, rid), NO_RETRY_METADATA)
        await context.abort(status.code, status.details, trailing)

    def unary(self, fn: Unary[T]) -> Unary[T]:
        """Wraps a unary (or client-streaming) handler."""
        method = fn.__name__

        @functools.wraps(fn)
        async def wrapper(servicer: Any, request: Any, context: grpc.aio.ServicerContext) -> T:
            rid = self._begin(request, context)
            try:
                response = await fn(servicer, _checked(request), context)
            except asyncio.CancelledError:
                self.requests.labels(method, "CANCELLED").inc()
                raise
            except Exception as exc:
                await self._fail(method, exc, context, rid)
                raise  # unreachable: abort raises
            self.requests.labels(method, "OK").inc()
            return response

        return wrapper

    def stream(self, fn: Streaming[T]) -> Streaming[T]:
        """Wraps a server-streaming handler."""
        method = fn.__name__

        @functools.wraps(fn)
        async def wrapper(servicer: Any, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[T]:
            rid = self._begin(request, context)
            try:
                async for message in fn(servicer, _checked(request), context):
                    yield message
            except (asyncio.CancelledError, GeneratorExit):
                # A client's cancel reaches a stream either as a cancelled task or, when it lands while grpc is
                # sending a message, as the generator closed at its yield: both are CANCELLED.
                self.requests.labels(method, "CANCELLED").inc()
                raise
            except Exception as exc:
                await self._fail(method, exc, context, rid)
                return
            self.requests.labels(method, "OK").inc()

        return wrapper


def _checked(request: Any) -> Any:
    """The request; InvalidArgument when it (or, client-streaming, any message of it) did not decode, or its
    request_id cannot be echoed as metadata (which would fail the call after the handler ran)."""
    if isinstance(request, Undecodable):
        raise request.error()
    if hasattr(request, "__aiter__"):
        return _decoded_stream(request)
    request_id = getattr(request, "request_id", "")
    if request_id and not sendable_request_id(request_id):
        raise InvalidArgument([("request_id", "must be at most 128 printable ASCII characters")])
    return request


async def _decoded_stream(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for message in requests:
        if isinstance(message, Undecodable):
            raise message.error()
        yield message
