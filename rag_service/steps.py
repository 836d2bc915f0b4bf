"""Pipeline steps: one helper owns a step's timing, its metric (rag_step_seconds), its trace span, and the
fallback of an optional step."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from rag_service import metrics
from rag_service.errors import ServiceError
from rag_service.tracing import SpanType, Tick, TraceRecorder, tick

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(slots=True)
class Step:
    """A running step: what its span shows is set inside the `with` block, once known."""

    name: str
    start: Tick
    input: Mapping[str, Any] | None = None
    output: Mapping[str, Any] | None = None
    metadata: Mapping[str, Any] | None = None
    usage: Mapping[str, int] | None = None
    model: str | None = None
    type: SpanType | None = None
    error: BaseException | None = None


class Steps:
    """The timed steps of one request: seconds per step in the order they ended, one span each on the trace."""

    def __init__(self, rec: TraceRecorder, timings: dict[str, float] | None = None):
        self.rec = rec
        self.timings = {} if timings is None else timings

    @contextmanager
    def step(
        self,
        name: str,
        input: Mapping[str, Any] | None = None,
        *,
        metadata: Mapping[str, Any] | None = None,
        type: SpanType | None = None,
        span: bool = True,
    ) -> Iterator[Step]:
        """Times the block as the step `name`; `span=False` for a step whose spans the block records itself.
        A step that raises is neither timed nor traced (the trace records the error)."""
        step = Step(name, tick(), input, metadata=metadata, type=type)
        yield step
        end = tick()
        seconds = self.timings[name] = end - step.start
        metrics.STEP_SECONDS.labels(name).observe(seconds)
        if span:
            self.rec.add_span(
                name,
                step.start,
                end,
                step.input,
                step.output,
                step.metadata,
                step.usage,
                step.model,
                type=step.type,
                error=step.error,
            )

    async def optional(
        self,
        name: str,
        work: Awaitable[T],
        fallback: T,
        input: Mapping[str, Any],
        output: Callable[[T], Mapping[str, Any]],
    ) -> T:
        """Runs an optional step; a failure or a timeout falls back to `fallback`, logged, counted and traced."""
        with self.step(name, input) as step:
            try:
                result = await work
            except (TimeoutError, ServiceError) as exc:
                log.warning("%s failed, falling back: %s", name, exc)
                metrics.STEP_FALLBACKS.labels(name).inc()
                result, step.error = fallback, exc
            step.output = output(result)
        return result
