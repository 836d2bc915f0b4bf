"""Stop-sequence matching on a token stream, holding back text that may be the start of a stop sequence."""

from __future__ import annotations


class StopMatcher:
    """Feeds generated text through; releases only text that can no longer be part of a stop sequence."""

    def __init__(self, stop_sequences: tuple[str, ...]):
        self._stops = tuple(s for s in stop_sequences if s)
        self._held = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """Returns the text safe to emit now; sets `stopped` when a stop sequence completed (it is cut off)."""
        if not self._stops:
            return text
        self._held += text
        cut = min((i for i in (self._held.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            out, self._held = self._held[:cut], ""
            return out
        keep = max((_partial_suffix(self._held, s) for s in self._stops), default=0)
        out, self._held = self._held[: len(self._held) - keep], self._held[len(self._held) - keep :]
        return out

    def flush(self) -> str:
        """Releases the held-back text at the end of the stream."""
        out, self._held = self._held, ""
        return out


def _partial_suffix(text: str, stop: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `stop`."""
    for n in range(min(len(stop) - 1, len(text)), 0, -1):
        if text.endswith(stop[:n]):
            return n
    return 0
