"""Requests whose bytes do not decode (invalid UTF-8 in a string, a broken wire format) as INVALID_ARGUMENT.

grpc's own deserializer raises, and grpc answers UNKNOWN ("Unexpected DecodeError"), which says "server bug"
to the caller. Here the deserializer of our services' methods returns an `Undecodable` marker instead, and
`servekit.rpc` turns it into INVALID_ARGUMENT with a field violation on `request`, counted like any bad input.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from servekit.errors import InvalidArgument


@dataclass(frozen=True, slots=True)
class Undecodable:
    """Stands for a request message that could not be parsed; `type_name` is the message type expected."""

    type_name: str

    def error(self) -> InvalidArgument:
        """The error to answer with."""
        return InvalidArgument(
            [("request", f"not a valid {self.type_name} (invalid UTF-8 in a string field or a malformed message)")],
            reason="UNDECODABLE_REQUEST",
        )


def _safe(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    type_name = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
    name = type_name.full_name if type_name is not None else "request message"

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError:
            return Undecodable(name)

    return deserialize


class DecodeErrorInterceptor(grpc.aio.ServerInterceptor):
    """Swaps in the tolerant deserializer for the methods of the named services (others are left as they are)."""

    def __init__(self, service_names: tuple[str, ...]) -> None:
        self._prefixes = tuple(f"/{name}/" for name in service_names)
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}  # per method: handlers do not change

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        """The method's handler, with a deserializer that never raises for our services."""
        method = handler_call_details.method  # type: ignore[attr-defined]
        handler = await continuation(handler_call_details)
        if handler is None or not method.startswith(self._prefixes) or handler.request_deserializer is None:
            return handler
        if (wrapped := self._wrapped.get(method)) is None:
            # Handlers are namedtuples: a copy with the other deserializer, made once per method.
            wrapped = handler._replace(request_deserializer=_safe(handler.request_deserializer))  # type: ignore[attr-defined]
            self._wrapped[method] = wrapped
        return wrapped
