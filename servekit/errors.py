"""Service errors and their gRPC statuses.

    ServiceError                    (INTERNAL)
    ├── InvalidArgument             (INVALID_ARGUMENT, with BadRequest field violations)
    ├── Overloaded                  (RESOURCE_EXHAUSTED)
    ├── Unavailable                 (UNAVAILABLE)
    └── DeadlineExceeded            (DEADLINE_EXCEEDED)

Each status carries a google.rpc.Status with one ErrorInfo (reason, domain) so clients in any
language can branch on `reason` rather than on message text.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status


class ServiceError(Exception):
    """Base of every error a servicer turns into a status; INTERNAL unless a subclass says otherwise."""

    code = grpc.StatusCode.INTERNAL
    reason = "INTERNAL"

    def __init__(self, message: str, *, reason: str | None = None, metadata: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        if reason:
            self.reason = reason
        self.metadata = metadata or {}


class InvalidArgument(ServiceError):
    """The request is malformed; `violations` maps field paths to what is wrong with them."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: dict[str, str] | list[tuple[str, str]], *, reason: str | None = None):
        self.violations = list(violations.items()) if isinstance(violations, dict) else list(violations)
        summary = "; ".join(f"{f}: {d}" for f, d in self.violations)
        super().__init__(f"invalid request: {summary}", reason=reason)


class Overloaded(ServiceError):
    """Too many requests in flight; retry later."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "OVERLOADED"


class Unavailable(ServiceError):
    """A dependency (model, store, upstream service) cannot serve now."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "UNAVAILABLE"


class DeadlineExceeded(ServiceError):
    """The work did not finish before the deadline."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = "DEADLINE_EXCEEDED"


def to_status(error: ServiceError, domain: str) -> grpc.Status:
    """The rich gRPC status for an error: code, message, ErrorInfo and (for bad input) BadRequest."""
    details: list[any_pb2.Any] = []
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=domain, metadata=error.metadata)
    details.append(_pack(info))
    if isinstance(error, InvalidArgument):
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in error.violations
            ]
        )
        details.append(_pack(bad))
    status = status_pb2.Status(code=getattr(code_pb2, error.code.name), message=error.message, details=details)
    return rpc_status.to_status(status)


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def field_violations(error: grpc.aio.AioRpcError | grpc.RpcError) -> list[tuple[str, str]]:
    """The BadRequest field violations of a received error (empty when it has none)."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    out: list[tuple[str, str]] = []
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            out.extend((v.field, v.description) for v in bad.field_violations)
    return out


def error_reason(error: grpc.aio.AioRpcError | grpc.RpcError) -> str:
    """The ErrorInfo reason of a received error, or "" when it has none."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return ""
