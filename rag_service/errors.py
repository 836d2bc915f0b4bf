"""RAG service errors (see servekit.errors for the tree and the status mapping)."""

from __future__ import annotations

from servekit.errors import (
    Cancelled,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    Overloaded,
    ServiceError,
    Unavailable,
)

DOMAIN = "rag.llmtwin"


class LlmUnavailable(Unavailable):
    """The LLM service cannot be reached; retrieval still works."""

    reason = "LLM_UNAVAILABLE"


class StoreUnavailable(Unavailable):
    """The vector store cannot be reached."""

    reason = "STORE_UNAVAILABLE"


__all__ = [
    "DOMAIN",
    "Cancelled",
    "DeadlineExceeded",
    "InvalidArgument",
    "LlmUnavailable",
    "NotFound",
    "Overloaded",
    "ServiceError",
    "StoreUnavailable",
    "Unavailable",
]
