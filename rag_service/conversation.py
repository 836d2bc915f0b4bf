"""The conversation an answer belongs to: earlier turns (oldest first), at most one extra instruction, and the
id that groups its answers (one thread in Opik). Domain types only; validated at the edge (convert.py)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

HISTORY_TRACE_TURNS = 6  # the last turns a trace shows
HISTORY_TRACE_CHARS = 300  # of each


class Role(StrEnum):
    """Who spoke a turn."""

    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM = "system"


@dataclass(frozen=True, slots=True)
class Turn:
    """One earlier turn."""

    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class Conversation:
    """The conversation so far, without the current question; empty for a question that stands alone."""

    turns: tuple[Turn, ...] = ()
    conversation_id: str = ""

    @property
    def instruction(self) -> str:
        """The caller's extra instruction (the system turn), or ""."""
        return next((t.content for t in self.turns if t.role == Role.SYSTEM), "")

    @property
    def dialogue(self) -> tuple[Turn, ...]:
        """The questions and answers, oldest first (the system turn left out)."""
        return tuple(t for t in self.turns if t.role != Role.SYSTEM)

    @property
    def questions(self) -> list[str]:
        """The reader's earlier questions, most recent first."""
        return [t.content for t in reversed(self.turns) if t.role == Role.USER]

    def shown(self) -> list[dict[str, str]]:
        """The history as a trace shows it: the last few turns, each cut to a few hundred characters."""
        return [
            {"role": t.role.value, "content": _cut(t.content, HISTORY_TRACE_CHARS)}
            for t in self.turns[-HISTORY_TRACE_TURNS:]
        ]


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
