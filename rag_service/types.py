"""Domain types of the RAG service. Protobuf stays at the edge (convert.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Kind(StrEnum):
    """Content kind; each kind lives in its own collection."""

    ARTICLE = "article"
    POST = "post"
    REPOSITORY = "repository"


@dataclass(frozen=True, slots=True)
class Document:
    """A source document as ingested."""

    id: str
    kind: Kind
    author_id: str
    author_full_name: str
    content: str
    title: str = ""
    link: str = ""


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of a document, the unit that is embedded and stored."""

    document_id: str
    kind: Kind
    author_id: str
    author_full_name: str
    chunk_index: int
    content: str
    title: str = ""
    link: str = ""


@dataclass(frozen=True, slots=True)
class ScoredChunk:
    """A retrieved chunk with its scores; `score` is the ranking score, `vector_score` the cosine similarity."""

    chunk: Chunk
    vector_score: float
    score: float
    vector: tuple[float, ...] | None = None


@dataclass(frozen=True, slots=True)
class Author:
    """An author present in the store."""

    id: str
    full_name: str


@dataclass(frozen=True, slots=True)
class SearchFilter:
    """Payload filter of a vector search; None fields do not filter."""

    author_id: str | None = None


@dataclass(slots=True)
class IngestReport:
    """Outcome of an ingestion."""

    documents_written: int = 0
    chunks_written: int = 0
    rejected: list[tuple[int, str, str]] = field(default_factory=list)  # (index or line, document id, reason)
