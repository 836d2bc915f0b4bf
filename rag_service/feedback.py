"""Reader feedback on one answer: the rules a rating must meet, and the score it becomes on the answer's trace.

A rating names its answer by the trace id the answer carried (``AnswerFinal.trace_id``). Only the id's form is
checked: traces live in Opik, written asynchronously by whichever replica answered, so no replica can tell
whether a well-formed id names a real trace (nor whether that trace was sampled). The score is exported off the
request path by the tracer (``Tracer.submit_feedback``); docs/tracing.md, "Feedback".
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from rag_service.errors import InvalidArgument

SCORE_NAME = "reader_rating"  # the feedback score's name in Opik
MAX_COMMENT_CHARS = 1000
# The canonical 8-4-4-4-12 hex form, the form trace ids are written in; any version is accepted, as the contract says.
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


class Rating(enum.IntEnum):
    """Thumbs up or down (the contract's FeedbackRating values)."""

    UP = 1
    DOWN = 2

    @property
    def score(self) -> float:
        """The score's value in Opik: 1 for up, 0 for down."""
        return 1.0 if self is Rating.UP else 0.0


@dataclass(frozen=True, slots=True)
class Feedback:
    """One validated rating of one answer, the unit a tracer exports as a feedback score."""

    trace_id: str  # lower-case canonical UUID
    rating: Rating
    comment: str = ""  # stripped; empty: none
    name: str = SCORE_NAME

    @property
    def value(self) -> float:
        """The score's value: 1.0 (up) or 0.0 (down)."""
        return self.rating.score

    @property
    def reason(self) -> str | None:
        """The score's reason in Opik: the comment, if any."""
        return self.comment or None


def make_feedback(trace_id: str, rating: int, comment: str) -> Feedback:
    """A validated Feedback; InvalidArgument naming ``trace_id``, ``rating`` and ``comment`` for what is wrong.

    ``rating`` is the contract's enum value (1 up, 2 down; 0, unset, and anything else are refused). The comment's
    length is counted in characters before stripping, the rule the gateway's schema states (``maxLength``).
    """
    violations: list[tuple[str, str]] = []
    if not trace_id:
        violations.append(("trace_id", "must not be empty: the answer's trace id (AnswerFinal.trace_id)"))
    elif not _UUID.fullmatch(trace_id):
        violations.append(("trace_id", "must be a UUID (8-4-4-4-12 hex digits), the answer's AnswerFinal.trace_id"))
    if rating not in Rating._value2member_map_:
        violations.append(("rating", "must be FEEDBACK_RATING_UP or FEEDBACK_RATING_DOWN"))
    if len(comment) > MAX_COMMENT_CHARS:
        violations.append(("comment", f"must have at most {MAX_COMMENT_CHARS} characters"))
    if violations:
        raise InvalidArgument(violations)
    return Feedback(trace_id=trace_id.lower(), rating=Rating(rating), comment=comment.strip())
