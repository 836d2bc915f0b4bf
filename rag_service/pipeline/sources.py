"""Sources: the retrieved chunks grouped by document, numbered as the prompt numbers them, and the ones an
answer cites."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from rag_service.types import Kind, ScoredChunk

# [1], [2, 3], [1][2]: what the prompt asks the model to write.
CITATION = re.compile(r"\[\s*(\d+(?:\s*,\s*\d+)*)\s*\]")


@dataclass(frozen=True, slots=True)
class Source:
    """One source document of the context: its retrieved chunks (best first) and what the prompt shows of it."""

    number: int
    chunks: tuple[ScoredChunk, ...]
    text: str = ""  # what the prompt shows: the whole chunks, or the sentences kept by compression
    evidence: str = ""  # the sentences closest to the question, for the reader

    @property
    def best(self) -> ScoredChunk:
        """The document's best-ranked chunk."""
        return self.chunks[0]

    @property
    def document_id(self) -> str:
        """Id of the document."""
        return self.best.chunk.document_id

    @property
    def kind(self) -> Kind:
        """Content kind."""
        return self.best.chunk.kind

    @property
    def title(self) -> str:
        """Document title ("" when none)."""
        return self.best.chunk.title

    @property
    def link(self) -> str:
        """Link to the document ("" when none)."""
        return self.best.chunk.link

    @property
    def author_full_name(self) -> str:
        """Author's full name."""
        return self.best.chunk.author_full_name

    @property
    def score(self) -> float:
        """The best chunk's ranking score."""
        return self.best.score


def group_by_document(hits: Sequence[ScoredChunk]) -> list[Source]:
    """One source per document, in the rank of its best chunk; its text is its chunks in document order."""
    groups: dict[str, list[ScoredChunk]] = {}
    for hit in hits:
        groups.setdefault(hit.chunk.document_id, []).append(hit)
    sources = []
    for number, chunks in enumerate(groups.values(), 1):
        ordered = sorted(chunks, key=lambda h: h.chunk.chunk_index)
        text = "\n\n".join(h.chunk.content.strip() for h in ordered)
        sources.append(Source(number, tuple(chunks), text))
    return sources


def cited(answer: str, sources: Sequence[Source]) -> list[Source]:
    """The sources an answer cites with [n] markers, in order of first citation; unknown numbers are dropped."""
    by_number = {s.number: s for s in sources}
    numbers = (int(n) for group in CITATION.findall(answer) for n in group.split(","))
    return list({n: by_number[n] for n in numbers if n in by_number}.values())
