"""Structured JSON logs with the current request id on every line."""

from __future__ import annotations

import json
import logging
import sys
import time
import uuid
from contextvars import ContextVar

# The request id's one carrier between our services (gateway → RAG → LLM), echoed as trailing metadata.
REQUEST_ID_KEY = "x-request-id"
TRACE_ID_KEY = "x-trace-id"  # the RAG's prompt-trace id, sent with every LLM call made for an answer

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")
trace_id_var: ContextVar[str] = ContextVar("trace_id", default="")  # the caller's prompt-trace id, if any

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, and any `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        """Formats the record as JSON."""
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": request_id_var.get(),
        }
        if trace_id := trace_id_var.get():
            entry["trace_id"] = trace_id
        entry.update({k: v for k, v in record.__dict__.items() if k not in _RESERVED})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str = "INFO") -> None:
    """Routes every logger to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Client libraries log every HTTP request at INFO (llama.cpp health polls, Opik uploads): keep warnings.
    for noisy in ("httpx", "httpcore", "urllib3", "opik"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def new_request_id() -> str:
    """A fresh request id."""
    return uuid.uuid4().hex


def metadata_value(metadata: object, key: str) -> str:
    """A gRPC metadata value ("" when absent), bounded in length."""
    for k, value in metadata or ():  # type: ignore[attr-defined]
        if k == key and value:
            return str(value)[:128]
    return ""


def sendable_request_id(value: str) -> bool:
    """True when an id can travel as gRPC metadata (printable ASCII) and fits 128 characters."""
    return len(value) <= 128 and value.isascii() and value.isprintable()


def resolve_request_id(field: str, metadata: object) -> str:
    """The request id: the message's request_id field, else the x-request-id metadata, else a new one.

    Our own clients send it once, as metadata; the public contracts keep the field for clients that prefer
    it, and a set field wins (docs/contracts.md). A field that cannot travel as metadata is replaced by a new
    id (servekit.rpc then rejects the request).
    """
    if field:
        return field if sendable_request_id(field) else new_request_id()
    return metadata_value(metadata, REQUEST_ID_KEY) or new_request_id()
