"""RAG service errors (see servekit.errors for the tree and the status mapping)."""

from __future__ import annotations

from servekit.errors import (
    DeadlineExceeded,
    InvalidArgument,
    Overloaded,
    ServiceError,
    Unavailable,
)

DOMAIN = "rag.llmtwin"


class LlmUnavailable(Unavailable):
    """The LLM service cannot be reached; retrieval still works."""

    reason = "LLM_UNAVAILABLE"


class StoreUnavailable(Unavailable):
    """The vector store cannot be reached (both adapters): a store server may come up later."""

    reason = "STORE_UNAVAILABLE"


class StoreLocked(StoreUnavailable):
    """The embedded store is open in another process (its WAL lock): waiting will not help, so start-up fails."""


__all__ = [
    "DOMAIN",
    "DeadlineExceeded",
    "InvalidArgument",
    "LlmUnavailable",
    "Overloaded",
    "ServiceError",
    "StoreLocked",
    "StoreUnavailable",
    "Unavailable",
]
