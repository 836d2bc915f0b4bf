"""Prompt traces, recorded in the request path: one answer's trace and spans, kept in memory (no I/O, no `opik`).

The pipeline asks a ``Tracer`` for a ``TraceRecorder``, records each step with ``add_span`` and ``tick()``
readings, and hands the recorder back with ``Tracer.submit``. Exporting is the tracer's business (the Opik one
lives in ``rag_service.opik_export`` and is chosen by the server's wiring). What a trace holds, span by span:
docs/tracing.md.
"""

from __future__ import annotations

import abc
import secrets
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, NewType

from rag_service.metrics import FEEDBACK_SCORES

if TYPE_CHECKING:
    from rag_service.feedback import Feedback

SpanType = Literal["general", "llm", "tool"]
Tick = NewType("Tick", float)  # a time.perf_counter() reading: the one clock spans are measured on


def tick() -> Tick:
    """Now, on the clock spans are measured on (monotonic; converted to wall-clock time once, per trace)."""
    return Tick(time.perf_counter())


Timestamp = Tick | datetime

TRACE_NAME = "rag_answer"


def uuid7() -> str:
    """A random UUID version 7 (48-bit Unix milliseconds + 74 random bits), the id format Opik requires."""
    value = (time.time_ns() // 1_000_000) << 80 | secrets.randbits(80)
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _error_info(error: BaseException | str) -> dict[str, str]:
    """Opik's error_info dict for an exception or a plain message."""
    if isinstance(error, str):
        return {"exception_type": "Error", "message": error, "traceback": ""}
    return {
        "exception_type": type(error).__name__,
        "message": str(error),
        "traceback": "".join(traceback.format_exception(error)),
    }


@dataclass(frozen=True, slots=True)
class SpanRecord:
    """One finished span, ready for export."""

    span_id: str
    parent_span_id: str | None
    name: str
    type: SpanType
    start: datetime
    end: datetime
    input: dict[str, Any] | None = None
    output: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    usage: dict[str, int] | None = None
    model: str | None = None
    error: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class TraceRecord:
    """One finished trace with its spans, the immutable unit a Tracer exports."""

    trace_id: str
    name: str
    start: datetime
    end: datetime
    input: dict[str, Any]
    output: dict[str, Any] | None
    metadata: dict[str, Any]
    spans: tuple[SpanRecord, ...]
    error: dict[str, str] | None = None
    thread_id: str | None = None  # the conversation id: Opik groups a conversation's traces as one thread


class TraceRecorder:
    """Collects one answer's trace and spans in memory; cheap, no I/O, safe inside the request path.

    An unsampled recorder keeps the same API and records nothing, so pipeline code never branches on sampling.
    """

    def __init__(
        self,
        request_id: str,
        query: str,
        metadata: Mapping[str, Any] | None = None,
        *,
        sampled: bool = True,
        name: str = TRACE_NAME,
        thread_id: str | None = None,
    ) -> None:
        self.request_id = request_id
        self.thread_id = thread_id or None
        self.query = query
        self.sampled = sampled
        self.name = name
        self._trace_id = uuid7()
        # One wall-clock anchor taken with a monotonic one: spans are timed on perf_counter (cheap, monotonic)
        # and converted to the datetimes Opik wants through this pair.
        self._wall0 = datetime.now(UTC)
        self._perf0 = time.perf_counter()
        self._metadata: dict[str, Any] = {"request_id": request_id, **(metadata or {})}
        self._spans: list[SpanRecord] = []
        self._output: dict[str, Any] | None = None
        self._error: dict[str, str] | None = None
        self._end: datetime | None = None
        self._record: TraceRecord | None = None

    @property
    def trace_id(self) -> str:
        """The trace's UUID v7, usable in logs and response metadata to find the trace in Opik."""
        return self._trace_id

    def at(self, t: Timestamp) -> datetime:
        """Convert a ``tick()`` reading (or a datetime, naive meaning UTC) to a UTC datetime."""
        if isinstance(t, datetime):
            return t if t.tzinfo is not None else t.replace(tzinfo=UTC)
        return self._wall0 + timedelta(seconds=t - self._perf0)

    def add_span(
        self,
        name: str,
        start: Timestamp,
        end: Timestamp,
        input: Mapping[str, Any] | None = None,
        output: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        usage: Mapping[str, int] | None = None,
        model: str | None = None,
        *,
        type: SpanType | None = None,
        parent: str | None = None,
        error: BaseException | str | None = None,
    ) -> str:
        """Record a finished step (start/end: ``tick()`` readings or datetimes); returns the span's id.

        ``type`` defaults to "llm" when a model is given, else "general"; ``parent`` nests it under another span.
        """
        span_id = uuid7()
        if self.sampled and self._record is None:
            self._spans.append(
                SpanRecord(
                    span_id=span_id,
                    parent_span_id=parent,
                    name=name,
                    type=type or ("llm" if model else "general"),
                    start=self.at(start),
                    end=self.at(end),
                    input=dict(input) if input is not None else None,
                    output=dict(output) if output is not None else None,
                    metadata=dict(metadata) if metadata else None,
                    usage=dict(usage) if usage is not None else None,
                    model=model,
                    error=_error_info(error) if error is not None else None,
                )
            )
        return span_id

    def annotate(self, metadata: Mapping[str, Any]) -> None:
        """Add trace metadata learnt along the way (e.g. the standalone query a follow-up was searched with)."""
        self._metadata.update(metadata)

    def set_output(self, answer: str, metadata: Mapping[str, Any] | None = None) -> None:
        """Record the final answer (and extra trace metadata); marks the trace's end time."""
        self._output = {"answer": answer}
        self._metadata.update(metadata or {})
        self._end = datetime.now(UTC)

    def set_error(self, error: BaseException | str) -> None:
        """Mark the trace as failed; marks its end time unless an output already did."""
        self._error = _error_info(error)
        self._end = self._end or datetime.now(UTC)

    def finish(self) -> TraceRecord:
        """Freeze the trace for export; later calls return the same record and later spans are ignored."""
        if self._record is None:
            self._record = TraceRecord(
                trace_id=self._trace_id,
                name=self.name,
                start=self._wall0,
                end=self._end or datetime.now(UTC),
                input={"query": self.query},
                output=self._output,
                metadata=dict(self._metadata),
                spans=tuple(self._spans),
                error=self._error,
                thread_id=self.thread_id,
            )
        return self._record


class Tracer(abc.ABC):
    """Exports finished traces; ``submit`` never blocks the caller and never raises."""

    def start_trace(
        self, request_id: str, query: str, metadata: Mapping[str, Any] | None = None, *, thread_id: str | None = None
    ) -> TraceRecorder:
        """A recorder for one answer, sampled according to this tracer's rate; `thread_id` groups the traces of
        one conversation."""
        return TraceRecorder(request_id, query, metadata, sampled=self.should_sample(), thread_id=thread_id)

    @abc.abstractmethod
    def should_sample(self) -> bool:
        """Whether the next trace should be recorded."""

    @abc.abstractmethod
    def submit(self, recorder: TraceRecorder) -> None:
        """Hand a finished trace over for export; unsampled recorders are ignored."""

    @abc.abstractmethod
    def close(self) -> None:
        """Flush what is queued within a bounded time and stop; safe to call twice."""

    def submit_feedback(self, feedback: Feedback) -> None:
        """Hand a reader's score of an answer over for export; never blocks, never raises. This default (a tracer
        that exports nothing) drops it, counted in ``rag_feedback_scores_total{outcome="dropped"}``."""
        FEEDBACK_SCORES.labels("dropped").inc()


class NoopTracer(Tracer):
    """Tracing off: samples nothing, exports nothing."""

    def should_sample(self) -> bool:
        """Never."""
        return False

    def submit(self, recorder: TraceRecorder) -> None:
        """Ignore the trace."""

    def close(self) -> None:
        """Nothing to flush."""
