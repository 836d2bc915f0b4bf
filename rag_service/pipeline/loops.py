"""Loop guard: stops an answer that starts repeating itself, whatever the backend's sampling does.

Small models (and large ones with greedy decoding) fall into loops: the same sentence again and again until
the token limit. Sampling penalties help but also push the model away from the words of its context, which
is what a grounded answer is made of (docs/evaluation.md). So the RAG service watches the answer instead: as
soon as a sentence it already wrote comes again, or a run of `window` words repeats, the generation is
stopped and the answer ends before the repetition began.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"\w+(?:['’.,%-]\w+)*")
_SENTENCE_END = re.compile(r"[.!?](?=\s)|\n")
MIN_SENTENCE_WORDS = 3


class LoopGuard:
    """Feed it the answer's text as it streams; `looping` turns True once it repeats, and `answer` is the text
    up to where the repetition began."""

    def __init__(self, window: int = 8):
        self.window = window
        self.text = ""
        self.looping = False
        self._cut = -1  # text offset where the repetition began
        self._words: list[tuple[str, int]] = []  # (lower-case word, offset in text)
        self._grams: set[tuple[str, ...]] = set()
        self._sentences: set[tuple[str, ...]] = set()
        self._sentence_start = 0  # index in _words of the current sentence's first word
        self._scanned = 0  # text offset up to which words were read

    @property
    def answer(self) -> str:
        """The answer without the repetition (all of it while not looping)."""
        return self.text[: self._cut].rstrip() if self.looping else self.text

    def feed(self, piece: str) -> bool:
        """Adds streamed text; True when the answer now loops."""
        if self.looping:
            return True
        self.text += piece
        # Only words followed by a non-word character are complete; the last one may still grow.
        end = len(self.text)
        while end > self._scanned and (self.text[end - 1].isalnum() or self.text[end - 1] in "'’.,%-_"):
            end -= 1
        for match in _WORD.finditer(self.text, self._scanned, end):
            self._add_word(match.group().lower().rstrip(".,"), match.start())
            if self.looping:
                return True
            if _SENTENCE_END.match(self.text, match.end()):
                self._end_sentence()
                if self.looping:
                    return True
        if end > self._scanned:
            self._scanned = end
        return False

    def _add_word(self, word: str, offset: int) -> None:
        self._words.append((word, offset))
        if len(self._words) >= self.window:
            gram = tuple(w for w, _ in self._words[-self.window :])
            if gram in self._grams:
                self._loop(self._words[-self.window][1])
            self._grams.add(gram)

    def _end_sentence(self) -> None:
        sentence = tuple(w for w, _ in self._words[self._sentence_start :])
        if len(sentence) >= MIN_SENTENCE_WORDS:
            if sentence in self._sentences:
                self._loop(self._words[self._sentence_start][1])
            self._sentences.add(sentence)
        self._sentence_start = len(self._words)

    def _loop(self, offset: int) -> None:
        self.looping = True
        self._cut = offset
