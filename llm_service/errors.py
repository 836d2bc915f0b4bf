"""LLM service errors (see servekit.errors for the tree and the status mapping)."""

from __future__ import annotations

from servekit.errors import (
    DeadlineExceeded,
    InvalidArgument,
    Overloaded,
    ServiceError,
    Unavailable,
)

DOMAIN = "llm.llmtwin"


class BackendUnavailable(Unavailable):
    """The backend cannot be reached or is not loaded (server down, endpoint missing, connection lost)."""

    reason = "BACKEND_UNAVAILABLE"


class BackendError(ServiceError):
    """The backend failed while generating (an error event mid-stream, a ModelStreamError...)."""

    reason = "BACKEND_ERROR"


__all__ = [
    "DOMAIN",
    "BackendError",
    "BackendUnavailable",
    "DeadlineExceeded",
    "InvalidArgument",
    "Overloaded",
    "ServiceError",
    "Unavailable",
]
