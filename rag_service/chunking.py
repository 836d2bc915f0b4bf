"""Token-aware chunking: windows of the embedding model's tokens, cut at paragraph, sentence or word ends."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import pairwise

from tokenizers import Tokenizer

from rag_service.types import Chunk, Document, Kind

# The model reads 256 tokens including [CLS] and [SEP]; anything longer is silently cut off.
MAX_CHUNK_TOKENS = 254
_SENTENCE_END = re.compile(r"[.!?…][\"')\]»”’]*$")


@dataclass(frozen=True, slots=True)
class ChunkSize:
    """Chunk length and overlap with the previous chunk, in model tokens."""

    tokens: int
    overlap: int

    def __post_init__(self) -> None:
        if not 0 < self.tokens <= MAX_CHUNK_TOKENS:
            raise ValueError(f"chunk size must be in 1..{MAX_CHUNK_TOKENS} tokens, got {self.tokens}")
        if not 0 <= self.overlap < self.tokens // 2:
            raise ValueError(f"overlap must be in 0..{self.tokens // 2 - 1} tokens, got {self.overlap}")


DEFAULT_CHUNK_SIZES: Mapping[Kind, ChunkSize] = {
    Kind.ARTICLE: ChunkSize(200, 40),
    Kind.REPOSITORY: ChunkSize(200, 40),
    Kind.POST: ChunkSize(120, 20),
}

# Break strengths at a token boundary, strongest first.
_PARAGRAPH, _SENTENCE, _LINE, _WORD, _NONE = 4, 3, 2, 1, 0


def chunk_document(
    doc: Document, tokenizer: Tokenizer, sizes: Mapping[Kind, ChunkSize] = DEFAULT_CHUNK_SIZES
) -> list[Chunk]:
    """Split a document into overlapping chunks of at most `sizes[doc.kind].tokens` tokens; deterministic."""
    size = sizes[doc.kind]
    text = doc.content
    offsets = tokenizer.encode(text, add_special_tokens=False).offsets
    if not offsets:
        return []
    breaks = _break_strengths(text, offsets)
    spans: list[tuple[int, int]] = []
    start, n = 0, len(offsets)
    while True:
        end = n if n - start <= size.tokens else _cut(breaks, start, start + size.tokens)
        spans.append((start, end))
        if end == n:
            break
        start = _overlap_start(breaks, end, size.overlap, floor=start + 1)
    return [
        Chunk(
            document_id=doc.id,
            kind=doc.kind,
            author_id=doc.author_id,
            author_full_name=doc.author_full_name,
            chunk_index=i,
            content=text[offsets[s][0] : offsets[e - 1][1]],
            title=doc.title,
            link=doc.link,
        )
        for i, (s, e) in enumerate(spans)
    ]


def _break_strengths(text: str, offsets: list[tuple[int, int]]) -> list[int]:
    """strength[i]: how good it is to start a chunk at token i (to end one just before it)."""
    strengths = [_PARAGRAPH]
    for (_, prev_end), (start, _) in pairwise(offsets):
        gap = text[prev_end:start]
        if not any(c.isspace() for c in gap):
            strengths.append(_NONE)  # inside a word: "##" pieces, or punctuation stuck to it
        elif "\n\n" in gap or "\n\r\n" in gap:
            strengths.append(_PARAGRAPH)
        elif _SENTENCE_END.search(text[max(0, prev_end - 4) : prev_end]):
            strengths.append(_SENTENCE)
        elif "\n" in gap:
            strengths.append(_LINE)
        else:
            strengths.append(_WORD)
    return strengths


def _cut(breaks: list[int], start: int, limit: int) -> int:
    """End of a chunk starting at `start`: the strongest break in the second half of the window, latest first."""
    lowest = start + max(1, (limit - start) // 2)
    best, best_strength = limit, _NONE
    for i in range(limit, lowest - 1, -1):
        if breaks[i] > best_strength:
            best, best_strength = i, breaks[i]
            if best_strength == _PARAGRAPH:
                break
    # A single word longer than the window has to be cut somewhere.
    return best if best_strength > _NONE else limit


def _overlap_start(breaks: list[int], end: int, overlap: int, floor: int) -> int:
    """Start of the next chunk: at most `overlap` tokens back from `end`, preferring a sentence start."""
    if overlap == 0:
        return end
    window = range(max(floor, end - overlap), end)
    for strength in (_SENTENCE, _WORD):
        for i in window:
            if breaks[i] >= strength:
                return i
    return end
