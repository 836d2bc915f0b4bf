"""Bearer-token authentication: the token check, a grpc.aio server interceptor, and a client interceptor.

Callers send `authorization: Bearer <token>` (gRPC metadata or HTTP header). A service configured with no
tokens does not check anything (the local stack's default). Tokens are compared in constant time against
every configured token, so timing reveals neither a prefix nor which token matched; no token is ever
logged or echoed in an error.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import grpc
from pydantic import SecretStr

from servekit.errors import ServiceError, to_status

log = logging.getLogger(__name__)

OPEN_HEALTH = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch", "/grpc.health.v1.Health/List"})
OPEN_REFLECTION = frozenset(
    {
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    }
)
_SCHEME = "bearer"


class Unauthenticated(ServiceError):
    """The call carries no valid credentials."""

    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "UNAUTHENTICATED"


class BearerTokens:
    """The accepted tokens of one service; empty means authentication is off."""

    def __init__(self, tokens: Iterable[str | SecretStr]):
        values = (t.get_secret_value() if isinstance(t, SecretStr) else t for t in tokens)
        self._tokens = [v.encode() for v in values if v]

    def __bool__(self) -> bool:
        return bool(self._tokens)

    def accepts(self, token: str) -> bool:
        """True when `token` is one of ours; every configured token is compared, each in constant time."""
        presented = token.encode()
        matched = False
        for known in self._tokens:
            matched |= hmac.compare_digest(presented, known)
        return matched

    def check(self, authorization: str) -> None:
        """Raises Unauthenticated unless `authorization` is `Bearer <one of our tokens>` (or auth is off)."""
        if not self._tokens:
            return
        if not authorization:
            raise Unauthenticated("missing credentials: send 'authorization: Bearer <token>'", reason="MISSING_TOKEN")
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != _SCHEME or not token.strip():
            raise Unauthenticated(
                "malformed credentials: expected 'authorization: Bearer <token>'", reason="BAD_SCHEME"
            )
        if not self.accepts(token.strip()):
            raise Unauthenticated("invalid bearer token", reason="INVALID_TOKEN")


def bearer_header(token: str | SecretStr) -> str:
    """The `authorization` value that presents `token`."""
    value = token.get_secret_value() if isinstance(token, SecretStr) else token
    return f"Bearer {value}"


def _authorization(metadata: Iterable[Any] | None) -> str:
    for key, value in metadata or ():
        if key == "authorization":
            return value if isinstance(value, str) else ""
    return ""


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls without a valid bearer token with UNAUTHENTICATED (a rich status); `open_methods` pass."""

    def __init__(self, tokens: BearerTokens, domain: str, open_methods: Iterable[str] = ()):
        self._tokens = tokens
        self._domain = domain
        self._open = frozenset(open_methods)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        """Passes the call on when open or authenticated, else answers it with a handler that aborts."""
        method = handler_call_details.method
        if method in self._open:
            return await continuation(handler_call_details)
        try:
            self._tokens.check(_authorization(handler_call_details.invocation_metadata))
        except Unauthenticated as exc:
            log.info("unauthenticated call refused", extra={"method": method, "reason": exc.reason})
            handler = await continuation(handler_call_details)
            return _refusing(handler, to_status(exc, self._domain)) if handler else handler
        return await continuation(handler_call_details)


def _refusing(handler: grpc.RpcMethodHandler, status: grpc.Status) -> grpc.RpcMethodHandler:
    # Same kind and (de)serializers as the real handler, so any RPC shape gets the status cleanly.
    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(status.code, status.details, status.trailing_metadata)

    serializers = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(refuse, **serializers)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(refuse, **serializers)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(refuse, **serializers)
    return grpc.stream_stream_rpc_method_handler(refuse, **serializers)


def server_interceptors(
    tokens: Iterable[str | SecretStr], domain: str, *, open_health: bool = True, open_reflection: bool = True
) -> list[grpc.aio.ServerInterceptor]:
    """The interceptors a service needs for these tokens: none when the list is empty (auth off)."""
    accepted = BearerTokens(tokens)
    if not accepted:
        return []
    open_methods = (OPEN_HEALTH if open_health else frozenset()) | (OPEN_REFLECTION if open_reflection else frozenset())
    return [AuthInterceptor(accepted, domain, open_methods)]


class _BearerMetadata:
    """Adds `authorization: Bearer <token>` to the metadata of every call it intercepts."""

    def __init__(self, token: str):
        self._header = ("authorization", bearer_header(token))

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()), self._header)
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )


# grpc.aio files a channel's interceptor under the first call kind it subclasses: one class per kind.
class _UnaryUnary(_BearerMetadata, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        """Sends the token with a unary call."""
        return await continuation(self._details(client_call_details), request)


class _UnaryStream(_BearerMetadata, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        """Sends the token with a server-streaming call."""
        return await continuation(self._details(client_call_details), request)


class _StreamUnary(_BearerMetadata, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        """Sends the token with a client-streaming call."""
        return await continuation(self._details(client_call_details), request_iterator)


class _StreamStream(_BearerMetadata, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        """Sends the token with a bidirectional call."""
        return await continuation(self._details(client_call_details), request_iterator)


def client_interceptors(token: str | SecretStr | None) -> list[grpc.aio.ClientInterceptor]:
    """The interceptors a client channel needs to present `token` on every call: none without one."""
    value = token.get_secret_value() if isinstance(token, SecretStr) else token
    if not value:
        return []
    return [_UnaryUnary(value), _UnaryStream(value), _StreamUnary(value), _StreamStream(value)]
