"""Source documents from JSON Lines, and the validation shared with the ingestion RPC."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from rag_service.types import Document, Kind

REQUIRED_FIELDS = ("id", "kind", "author_id", "author_full_name", "content")
OPTIONAL_FIELDS = ("title", "link")
_KINDS = ", ".join(k.value for k in Kind)


def _field(doc: Any, name: str) -> Any:
    return doc.get(name) if isinstance(doc, Mapping) else getattr(doc, name, None)


def validate_document(doc: Any) -> list[str]:
    """What is wrong with a document (a mapping or an object with the fields), as "field: problem"; [] if valid."""
    problems = []
    for name in REQUIRED_FIELDS:
        value = _field(doc, name)
        if name == "kind" and isinstance(value, Kind):
            continue
        if not isinstance(value, str) or not value.strip():
            problems.append(f"{name}: required, a non-empty string")
        elif not _encodable(value):
            problems.append(f"{name}: {_NOT_UNICODE}")
        elif name == "kind" and value not in {k.value for k in Kind}:
            problems.append(f"kind: must be one of {_KINDS}, got {value!r}")
    for name in OPTIONAL_FIELDS:
        value = _field(doc, name)
        if value is not None and not isinstance(value, str):
            problems.append(f"{name}: must be a string")
        elif isinstance(value, str) and not _encodable(value):
            problems.append(f"{name}: {_NOT_UNICODE}")
    return problems


_NOT_UNICODE = "must be valid Unicode text (no unpaired surrogates)"


def _encodable(text: str) -> bool:
    # JSON can escape an unpaired surrogate ("\ud800"): a str Python holds but protobuf cannot encode.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def to_document(doc: Any) -> Document:
    """A Document from a valid mapping or object (check it with validate_document first)."""
    return Document(
        id=_field(doc, "id"),
        kind=Kind(_field(doc, "kind")),
        author_id=_field(doc, "author_id"),
        author_full_name=_field(doc, "author_full_name"),
        content=_field(doc, "content"),
        title=_field(doc, "title") or "",
        link=_field(doc, "link") or "",
    )


def parse_jsonl(lines: Iterable[str | bytes]) -> tuple[list[Document], list[tuple[int, str, str]]]:
    """Valid documents, and the rejected lines as (line number from 1, id or "", reason); blank lines skipped."""
    numbered, rejected = parse_jsonl_numbered(lines)
    return [doc for _, doc in numbered], rejected


def parse_jsonl_numbered(
    lines: Iterable[str | bytes],
) -> tuple[list[tuple[int, Document]], list[tuple[int, str, str]]]:
    """Like parse_jsonl, with each valid document's line number; byte lines must be UTF-8."""
    documents: list[tuple[int, Document]] = []
    rejected: list[tuple[int, str, str]] = []
    for number, raw in enumerate(lines, start=1):
        if isinstance(raw, bytes):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                rejected.append((number, "", f"not valid UTF-8 at byte {error.start + 1}"))
                continue
        else:
            line = raw
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            rejected.append((number, "", f"invalid JSON: {error.msg} at column {error.colno}"))
            continue
        if not isinstance(record, dict):
            rejected.append((number, "", "not a JSON object"))
            continue
        doc_id = record["id"] if isinstance(record.get("id"), str) else ""
        problems = validate_document(record)
        if problems:
            rejected.append((number, doc_id, "; ".join(problems)))
        else:
            documents.append((number, to_document(record)))
    return documents, rejected
