"""Context compression: keep the sentences of each source closest to the question, within a token budget.

The prompt's prefill is most of the time to first token on a CPU, and a small model answers better from a
few relevant sentences than from whole chunks. Sentences are scored against the question either by the
question's words they share (`lexical`, the default: no model call, and the better answers on the eval set)
or by cosine with the embedding model the service already runs (`embedding`; sentence vectors cached, so a
document embeds once per replica). Every source keeps its best sentence first (so each one shown has
something to cite), then the best remaining sentences overall are added while they fit; kept sentences are
shown in document order (docs/evaluation.md, "Answer quality").
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace

import numpy as np

from rag_service.pipeline.sources import Source

EVIDENCE_CHARS = 300
EVIDENCE_MARGIN = 0.1  # evidence sentences score within this cosine of the best one
MIN_SENTENCE_CHARS = 25  # shorter pieces (list bullets, headings, "It did.") join the next one
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[`A-Z0-9])")

_WORDS = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset(
    "the and for with what does did how why which who when where that this from about into than then there their "
    "they them you your her his she him was were are has have had not but can could would should will its".split()
)

Embed = Callable[[list[str]], Awaitable[list[list[float]]]]


def split_sentences(text: str) -> list[str]:
    """Sentences of a text: lines split at sentence ends, fragments joined with the next piece."""
    return [sentence for sentence, _ in _sentences(text)]


def _sentences(text: str) -> list[tuple[str, bool]]:
    """(sentence, whether it starts a line): code and lists keep their line breaks when joined again.
    A sentence seen before is left out (overlapping chunks of one document repeat their edges)."""
    pieces = [
        (s.rstrip() if i == 0 else s.strip(), i == 0)  # a line keeps its indentation
        for line in text.splitlines()
        for i, s in enumerate(_SENTENCE_END.split(line))
        if s.strip()
    ]
    out: list[tuple[str, bool]] = []
    carry: tuple[str, bool] | None = None
    for piece, starts_line in pieces:
        if carry is not None:
            piece, starts_line = f"{carry[0]}{chr(10) if starts_line else ' '}{piece}", carry[1]
        if len(piece) < MIN_SENTENCE_CHARS:
            carry = (piece, starts_line)
        else:
            out.append((piece, starts_line))
            carry = None
    if carry is not None:
        if out:
            out[-1] = (f"{out[-1][0]}{chr(10) if carry[1] else ' '}{carry[0]}", out[-1][1])
        else:
            out.append(carry)
    seen: set[str] = set()
    unique = []
    for sentence, starts_line in out:
        if sentence not in seen:
            seen.add(sentence)
            unique.append((sentence, starts_line))
    return unique


def estimate_tokens(text: str) -> int:
    """About one token per 4 characters (BPE on English); the prompt step counts exactly afterwards."""
    return math.ceil(len(text) / 4) + 1


class Compressor:
    """Scores sentences against the question with the service's embedder (vectors cached by sentence)."""

    def __init__(self, embed: Embed, cache_size: int = 8192, scorer: str = "embedding"):
        self._embed = embed
        self._scorer = scorer
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size

    async def vectors(self, sentences: Sequence[str]) -> np.ndarray:
        """Unit vectors of the sentences, embedding only those not seen before."""
        missing = list(dict.fromkeys(s for s in sentences if s not in self._cache))
        if missing:
            for sentence, vector in zip(missing, await self._embed(missing), strict=True):
                self._cache[sentence] = np.asarray(vector, dtype=np.float32)
        for s in sentences:
            self._cache.move_to_end(s)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return np.stack([self._cache[s] for s in sentences]) if sentences else np.zeros((0, 0), np.float32)

    async def compress(
        self, query_vector: Sequence[float], sources: Sequence[Source], budget: int, query: str = ""
    ) -> list[Source]:
        """Sources with evidence set and, when budget > 0, text cut to the best sentences within `budget`
        estimated tokens; a source none of whose sentences fits is left out, and the rest renumbered."""
        pieces = [_sentences(s.text) for s in sources]
        split = [[sentence for sentence, _ in p] for p in pieces]
        flat = [sentence for sentences in split for sentence in sentences]
        if not flat:
            return list(sources)
        if self._scorer == "lexical":
            terms = _terms(query)
            scores = np.asarray([_overlap(terms, sentence) for sentence in flat], dtype=np.float32)
        else:
            scores = (await self.vectors(flat)) @ np.asarray(query_vector, dtype=np.float32)
        ranked: list[list[tuple[float, int]]] = []  # per source: (score, sentence index), best first
        offset = 0
        for sentences in split:
            # Best first; among equals, the earlier sentence.
            ranked.append(sorted(((float(scores[offset + i]), i) for i in range(len(sentences))), key=_best_first))
            offset += len(sentences)

        keep: list[set[int]] = [set() for _ in sources]
        if budget > 0:
            spent = 0
            # Each source's best sentence first (in source order), then the best of the rest, overall.
            firsts = [(j, r[0][1]) for j, r in enumerate(ranked) if r]
            rest = sorted(
                ((sc, j, i) for j, r in enumerate(ranked) for sc, i in r[1:]), key=lambda t: (-t[0], t[1], t[2])
            )
            for j, i in [*firsts, *((j, i) for _, j, i in rest)]:
                cost = estimate_tokens(split[j][i])
                if spent + cost <= budget or (spent == 0 and j == 0):
                    keep[j].add(i)
                    spent += cost

        out: list[Source] = []
        for j, source in enumerate(sources):
            evidence = _evidence(pieces[j], ranked[j])
            if budget <= 0:
                out.append(replace(source, number=len(out) + 1, evidence=evidence))
            elif keep[j]:
                text = _join(pieces[j], sorted(keep[j]))
                out.append(replace(source, number=len(out) + 1, text=text, evidence=evidence))
        return out


def _terms(text: str) -> set[str]:
    """Content words of a text, cut to their first 5 letters (a crude stem: "batching" ~ "batcher")."""
    return {w[:5] for w in _WORDS.findall(text.lower()) if len(w) > 2 and w not in _STOPWORDS}


def _overlap(terms: set[str], sentence: str) -> float:
    """Share of the question's content words that the sentence has."""
    return len(terms & _terms(sentence)) / len(terms) if terms else 0.0


def _best_first(scored: tuple[float, int]) -> tuple[float, int]:
    return -scored[0], scored[1]


def _evidence(sentences: Sequence[tuple[str, bool]], ranked: Sequence[tuple[float, int]]) -> str:
    """The best sentence, and the next best while they score near it and fit in about EVIDENCE_CHARS, in
    document order, on one line."""
    chosen: list[int] = []
    length = 0
    best = ranked[0][0] if ranked else 0.0
    for score, i in ranked:
        if chosen and (length + len(sentences[i][0]) > EVIDENCE_CHARS or score < best - EVIDENCE_MARGIN):
            break
        chosen.append(i)
        length += len(sentences[i][0]) + 1
    text = " ".join(_join(sentences, sorted(chosen)).split())
    return text if len(text) <= EVIDENCE_CHARS + 20 else text[:EVIDENCE_CHARS].rsplit(" ", 1)[0] + " …"


def _join(sentences: Sequence[tuple[str, bool]], indices: Sequence[int]) -> str:
    """Kept sentences in order, on their own line where they started one; " … " marks where sentences were
    left out between them."""
    out = ""
    previous = None
    for i in indices:
        sentence, starts_line = sentences[i]
        if previous is not None:
            out += " … " if i != previous + 1 else ("\n" if starts_line else " ")
        out += sentence
        previous = i
    return out
