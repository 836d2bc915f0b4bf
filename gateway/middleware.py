"""Pure ASGI middleware (they leave streaming and disconnect detection intact): request ids, bearer-token
authentication, body size limit."""

from __future__ import annotations

import logging
import re
import uuid

from fastapi.responses import JSONResponse
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import from_http_status
from gateway.models import REQUEST_ID_PATTERN
from servekit.auth import BearerTokens, Unauthenticated

REQUEST_ID_HEADER = "x-request-id"
_VALID_REQUEST_ID = re.compile(REQUEST_ID_PATTERN)
log = logging.getLogger(__name__)

# Open without a token: the chat page and its assets (static, no data: its API calls need the token),
# and the API description. Health is open unless auth_open_health is false.
OPEN_PATHS = frozenset({"/", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})
OPEN_PREFIXES = ("/static/",)
HEALTH_PATHS = frozenset({"/healthz", "/readyz"})
OPENAI_PATHS = ("/v1/chat/", "/v1/models")


def new_request_id() -> str:
    """A fresh request id."""
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """Takes the caller's x-request-id (or makes one), keeps it in request.state, returns it as a header.

    A route may replace request.state.request_id (with the id given in a JSON body) before the response
    starts; the header carries whatever the id is then.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get(REQUEST_ID_HEADER, "")
        # An id that cannot travel as gRPC metadata is replaced rather than rejected.
        state = scope.setdefault("state", {})
        state["request_id"] = given if _VALID_REQUEST_ID.match(given) else new_request_id()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = state["request_id"]
            await send(message)

        await self.app(scope, receive, send_with_id)


class _BodyTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """Answers 413 (JSON error body) to requests whose body exceeds max_bytes, declared or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(send)
            return

        received = 0
        exceeded = False
        rejected = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise _BodyTooLarge()
            return message

        async def guarded_send(message: Message) -> None:
            # Whatever the app answers to the interrupted body read (FastAPI turns it into a 400),
            # the client gets the 413 instead.
            nonlocal rejected
            if not exceeded:
                await send(message)
            elif message["type"] == "http.response.start" and not rejected:
                rejected = True
                await self._reject(send)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _BodyTooLarge:
            if not rejected:
                rejected = True
                await self._reject(send)

    async def _reject(self, send: Send) -> None:
        error = from_http_status(413, f"request body larger than {self.max_bytes} bytes", "BODY_TOO_LARGE")
        response = error.response()
        await send({"type": "http.response.start", "status": 413, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})


class BearerAuthMiddleware:
    """Answers 401 (with `WWW-Authenticate: Bearer`) to requests without a valid `Authorization: Bearer` token.

    The OpenAI-compatible routes get OpenAI's error shape (what its SDKs parse), every other route the
    gateway's own.
    """

    def __init__(self, app: ASGIApp, tokens: BearerTokens, open_health: bool = True) -> None:
        self.app = app
        self.tokens = tokens
        self.open_paths = OPEN_PATHS | (HEALTH_PATHS if open_health else frozenset())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in self.open_paths or path.startswith(OPEN_PREFIXES):
            await self.app(scope, receive, send)
            return
        try:
            self.tokens.check(Headers(scope=scope).get("authorization", ""))
        except Unauthenticated as exc:
            log.info("unauthenticated request refused", extra={"path": path, "reason": exc.reason})
            response = _unauthorized(path, exc)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _unauthorized(path: str, exc: Unauthenticated) -> JSONResponse:
    challenge = 'Bearer error="invalid_token"' if exc.reason == "INVALID_TOKEN" else "Bearer"
    error = from_http_status(401, exc.message, exc.reason)
    headers = {"www-authenticate": challenge}
    if path.startswith(OPENAI_PATHS):
        body = {
            "error": {"message": error.message, "type": "authentication_error", "code": error.reason, "param": None}
        }
        return JSONResponse(body, status_code=401, headers=headers)
    return error.response(headers=headers)
