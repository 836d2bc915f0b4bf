"""Cancelling a RAG call when the HTTP client goes away before its answer (or its stream's first event) is ready.

A handler awaiting a gRPC call does not notice a closed connection by itself: uvicorn only reports it as an
`http.disconnect` message on `receive()`, which nobody reads while the handler waits. `until_disconnected` reads
it concurrently and cancels the call, so that the RAG service (and the LLM behind it) stops at once instead of
generating until the deadline. Once an SSE response has started, sse-starlette watches for the disconnect itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

import grpc
from starlette.requests import Request

T = TypeVar("T")


class ClientDisconnected(Exception):
    """The HTTP client closed the connection before the answer was ready; the RAG call was cancelled."""


async def until_disconnected(request: Request, call: grpc.aio.Call, step: Awaitable[T]) -> T:
    """`step` (the call itself, or a read of it), unless the client disconnects first: then the call is cancelled
    and ClientDisconnected raised."""
    work = asyncio.ensure_future(step)
    watch = asyncio.ensure_future(_disconnect(request))
    try:
        await asyncio.wait((work, watch), return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # the handler itself is cancelled (server shutdown)
        call.cancel()
        work.cancel()
        raise
    finally:
        watch.cancel()
    if not work.done():
        call.cancel()
        work.cancel()
        await asyncio.gather(work, return_exceptions=True)
        raise ClientDisconnected
    return work.result()


async def _disconnect(request: Request) -> None:
    # The body is read already (FastAPI validated it), so what comes next is the disconnect (uvicorn sends it when
    # the connection closes, or once the response is complete).
    while (await request.receive())["type"] != "http.disconnect":
        pass
