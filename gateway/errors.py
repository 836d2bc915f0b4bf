"""gRPC statuses and request errors as HTTP responses.

Every error body has one shape:
    {"error": {"code": <http>, "status": "<GRPC_CODE>", "message": "...", "reason": "<ErrorInfo.reason>",
               "field_violations": [{"field": "...", "description": "..."}]}}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from gateway.disconnect import ClientDisconnected
from servekit.errors import error_reason, field_violations

# The one table of gRPC codes to HTTP statuses; codes not listed are 500.
HTTP_STATUS_BY_GRPC_CODE: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 422,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
}

# Errors the gateway raises itself, named like gRPC codes so clients branch on one vocabulary.
_STATUS_BY_HTTP = {http: code.name for code, http in HTTP_STATUS_BY_GRPC_CODE.items()} | {
    400: "INVALID_ARGUMENT",
    405: "UNIMPLEMENTED",
    413: "INVALID_ARGUMENT",
}


class FieldViolationBody(BaseModel):
    """One field of the request and what is wrong with it."""

    field: str
    description: str


class ErrorDetailBody(BaseModel):
    """The error: HTTP status, gRPC code name, message, machine-readable reason, field violations."""

    code: int
    status: str
    message: str
    reason: str
    field_violations: list[FieldViolationBody]


class ErrorBody(BaseModel):
    """Every error response of the gateway's own routes (documented in the OpenAPI schema)."""

    error: ErrorDetailBody


class OpenAIErrorDetailBody(BaseModel):
    """An error in OpenAI's shape."""

    message: str
    type: str
    code: str
    param: str | None


class OpenAIErrorBody(BaseModel):
    """Error responses of the OpenAI-compatible routes."""

    error: OpenAIErrorDetailBody


_ERROR_DESCRIPTIONS = {
    400: "The body is not JSON text.",
    413: "The body is larger than the gateway's limit (GATEWAY_MAX_BODY_BYTES).",
    422: "The request breaks a rule: field_violations name the fields (also what the schema cannot state: an "
    "unknown author, a prompt that does not fit the model).",
    429: "The RAG or LLM service is at its admission limit; retry later.",
    499: "The client closed the connection (the RAG call was cancelled).",
    500: "A server bug.",
    502: "The RAG service answered something unusable.",
    503: "The RAG or LLM service is unavailable.",
    504: "The request deadline (GATEWAY_REQUEST_TIMEOUT_S) passed.",
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text} for code, text in _ERROR_DESCRIPTIONS.items()
}
# The OpenAI-compatible routes write errors in OpenAI's shape, except a body refused before routing (413).
OPENAI_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody if code in (413, 499) else OpenAIErrorBody, "description": text}
    for code, text in _ERROR_DESCRIPTIONS.items()
}


@dataclass
class ApiError:
    """One error, whatever its source, ready to be written as JSON."""

    code: int
    status: str
    message: str
    reason: str = ""
    field_violations: list[tuple[str, str]] = field(default_factory=list)

    def body(self) -> dict[str, Any]:
        """The JSON error body."""
        return {
            "error": {
                "code": self.code,
                "status": self.status,
                "message": self.message,
                "reason": self.reason,
                "field_violations": [{"field": f, "description": d} for f, d in self.field_violations],
            }
        }

    def response(self, headers: Mapping[str, str] | None = None) -> JSONResponse:
        """The JSON error response."""
        return JSONResponse(self.body(), status_code=self.code, headers=headers)


def from_rpc_error(error: grpc.aio.AioRpcError) -> ApiError:
    """Translate a failed RAG call: HTTP status from the table, reason and violations from the details."""
    code = error.code()
    return ApiError(
        code=HTTP_STATUS_BY_GRPC_CODE.get(code, 500),
        status=code.name,
        message=error.details() or code.name,
        reason=_safe(error_reason, error, ""),
        field_violations=_safe(field_violations, error, []),
    )


def from_validation_error(error: RequestValidationError) -> ApiError:
    """Translate a request body that does not fit its model into a 422 with field violations."""
    violations = [(_field_path(e.get("loc", ())), str(e.get("msg", "invalid"))) for e in error.errors()]
    summary = "; ".join(f"{f}: {d}" if f else d for f, d in violations)
    return ApiError(422, "INVALID_ARGUMENT", f"invalid request: {summary}", "INVALID_ARGUMENT", violations)


def from_http_status(code: int, message: str = "", reason: str = "") -> ApiError:
    """An error the gateway answers itself (unknown route, body too large, ...)."""
    status = _STATUS_BY_HTTP.get(code, "INTERNAL" if code >= 500 else "FAILED_PRECONDITION")
    return ApiError(code, status, message or _phrase(code, status), reason or status)


def install(app: FastAPI) -> None:
    """Register the handlers that write every error in the gateway's shape."""
    app.add_exception_handler(grpc.aio.AioRpcError, _rpc_error_handler)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error_handler)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http_error_handler)  # type: ignore[arg-type]
    app.add_exception_handler(ClientDisconnected, _disconnected_handler)  # type: ignore[arg-type]


async def _rpc_error_handler(request: Request, error: grpc.aio.AioRpcError) -> JSONResponse:
    return from_rpc_error(error).response()


async def _validation_error_handler(request: Request, error: RequestValidationError) -> JSONResponse:
    return from_validation_error(error).response()


async def _http_error_handler(request: Request, error: HTTPException) -> JSONResponse:
    return from_http_status(error.status_code, str(error.detail)).response(headers=error.headers)


async def _disconnected_handler(request: Request, error: ClientDisconnected) -> JSONResponse:
    # Nobody reads it (the connection is gone); it is what the access log and the metrics record.
    return ApiError(499, "CANCELLED", "the client closed the connection", "CLIENT_DISCONNECTED").response()


def _phrase(code: int, default: str) -> str:
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return default


# Chat roles: pydantic puts the role of a message (the tag of its discriminated union) after the list index.
_ROLE_TAGS = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


def _field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    """The field a pydantic error location names, as a client wrote it: `messages.0.content`, not
    `body.messages.0.user.content.function-after[not_blank(), ...]`."""
    parts: list[str] = []
    previous: Any = "body"
    for i, part in enumerate(loc):
        drop = (
            (i == 0 and part == "body")  # FastAPI's prefix: the contract's paths start at the message
            or (isinstance(previous, int) and part in _ROLE_TAGS)  # a union's tag
            or (isinstance(part, str) and ("[" in part or part.startswith("constrained-")))  # a validator's name
        )
        if not drop:
            parts.append(str(part))
        previous = part
    return ".".join(parts)


def _safe(read: Any, error: grpc.aio.AioRpcError, default: Any) -> Any:
    # A status whose details do not decode (or a plain status from a foreign server) still maps cleanly.
    try:
        return read(error)
    except (ValueError, TypeError):
        return default
