"""Prompt-trace monitoring: record what one answer did (cheap, in the request path), export it to Opik off it.

Two halves:

- ``TraceRecorder`` (domain side) collects one answer's trace and spans in memory: no I/O, no `opik` import.
  Spans are recorded with a ``with recorder.span(...)`` block, or with ``add_span(...)`` and explicit
  ``time.perf_counter()`` readings for steps that ran concurrently. An unsampled recorder keeps the same API
  and records nothing, so pipeline code never branches on sampling.
- ``Tracer`` (export side): ``submit`` hands a finished recorder to a bounded queue and never blocks or
  raises. ``OpikTracer`` drains that queue on one daemon thread through the real `opik` SDK's low-level
  client (``Opik.trace`` / ``Opik.span`` with our own ids, then ``flush`` with a bounded timeout); the SDK's
  blocking HTTP calls, retries and timeouts therefore only ever stall that thread. ``make_tracer`` picks
  ``OpikTracer`` only when Opik is explicitly configured, else ``NoopTracer``.

What the RAG service records for one answer (one trace, spans children of the trace unless noted):

==========================  =========  ================================================================
trace ``rag_answer``        input      ``{"query": str}``
                            output     ``{"answer": str}``
                            metadata   ``request_id``, ``embedding_model``, ``reranker``,
                                       ``prompt_template_version``, ``llm_model`` (the LLM model id)
``expand``                  input      ``{"query": str}``; output ``{"queries": [str, ...]}``
``self_query``              output     ``{"author": str | None}`` (author full name or id found)
``search:<kind>:<n>``       input      ``{"query": str}`` (n = index of the expanded query);
                            output     ``{"hits": int, "top_scores": [float, ...]}``
``rerank``                  input      ``{"candidates": int}``; output ``{"kept": [{"id", "score"}, ...]}``;
                            metadata   ``{"reranker": str}``
``prompt``                  output     ``{"prompt": str}`` or ``{"messages": [...]}``;
                            metadata   ``{"prompt_tokens": int, "truncated_chunks": int}``
``generate`` (type "llm")   input      ``{"messages"/"prompt": ...}``; output ``{"answer": str}``;
                            model      LLM model id; metadata ``{"parameters": {...}, "ttft_s": float,
                                       "finish_reason": str}``; usage ``{"prompt_tokens",
                                       "completion_tokens", "total_tokens"}``
==========================  =========  ================================================================

Wiring sketch::

    rec = tracer.start_trace(request_id, query, {"embedding_model": ..., "llm_model": ...})
    with rec.span("expand", input={"query": query}) as s:
        queries = await expand(query)
        s.set_output({"queries": queries})
    t0 = time.perf_counter(); ...; rec.add_span("search:article:0", t0, time.perf_counter(), output=...)
    rec.set_output(answer)        # or rec.set_error(exc) when the answer failed
    tracer.submit(rec)            # after the stream ended; never blocks

Nest a span under another with ``parent=handle.span_id``. ``rec.trace_id`` (UUID v7) can go into logs or the
final response so an answer can be found in Opik.

Export behaviour (measured against a loopback fake of Opik): ``opik`` is imported on the export thread
(~1.5-4 s here, traces queue meanwhile). One batch (<= 64 traces) is handed to the SDK, then flushed with
``flush_timeout_s``; ``sent`` counts confirmed traces, ``failed`` unconfirmed ones (the SDK may still
deliver them: it retries 3 times over ~11 s, and once its connection monitor saw Opik down it parks traces in
a temp SQLite file and replays them when Opik answers again; we cap that parking at ``buffer_size`` traces
per outage), ``dropped`` those shed before the SDK (full buffer, SDK backlog, outage cap, close). Counters
are logged at most every 10 s, from the export thread, never from ``submit``.

Opik's SDK is configured by its own environment variables (``OPIK_URL_OVERRIDE``, ``OPIK_API_KEY``,
``OPIK_WORKSPACE``, ``OPIK_PROJECT_NAME``, ``OPIK_BACKGROUND_WORKERS``, ``OPIK_DEFAULT_FLUSH_TIMEOUT``).
"""

from __future__ import annotations

import abc
import asyncio
import logging
import math
import os
import queue
import random
import secrets
import threading
import time
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NewType

logger = logging.getLogger(__name__)

SpanType = Literal["general", "llm", "tool"]
Tick = NewType("Tick", float)  # a time.perf_counter() reading: the one clock spans are measured on


def tick() -> Tick:
    """Now, on the clock spans are measured on (monotonic; converted to wall-clock time once, per trace)."""
    return Tick(time.perf_counter())


Timestamp = Tick | datetime

TRACE_NAME = "rag_answer"
# A drained batch is sent and flushed as one unit; the cap keeps one flush's payload small.
_MAX_BATCH = 64
_LOG_EVERY_S = 10.0
_TRUE = {"1", "true", "yes", "on"}


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

    @property
    def duration_s(self) -> float:
        """Wall time the span took, in seconds."""
        return (self.end - self.start).total_seconds()


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


@dataclass(slots=True)
class SpanHandle:
    """The open span of a ``with recorder.span(...)`` block; set its output, metadata or usage inside it."""

    span_id: str
    output: dict[str, Any] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    usage: dict[str, int] | None = None
    model: str | None = None

    def set_output(self, output: Mapping[str, Any]) -> None:
        """Set the span's output."""
        self.output = dict(output)

    def update_metadata(self, **values: Any) -> None:
        """Add keys to the span's metadata."""
        self.metadata.update(values)

    def set_usage(self, prompt_tokens: int, completion_tokens: int) -> None:
        """Set token usage in the OpenAI shape Opik's UI reads."""
        self.usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }


class TraceRecorder:
    """Collects one answer's trace and spans in memory; cheap, no I/O, safe inside the request path."""

    def __init__(
        self,
        request_id: str,
        query: str,
        metadata: Mapping[str, Any] | None = None,
        *,
        sampled: bool = True,
        name: str = TRACE_NAME,
    ) -> None:
        self.request_id = request_id
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
        """Convert a ``time.perf_counter()`` reading (or a datetime, naive meaning UTC) to a UTC datetime."""
        if isinstance(t, datetime):
            return t if t.tzinfo is not None else t.replace(tzinfo=UTC)
        return self._wall0 + timedelta(seconds=t - self._perf0)

    @contextmanager
    def span(
        self,
        name: str,
        *,
        input: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        type: SpanType = "general",
        parent: str | None = None,
    ) -> Iterator[SpanHandle]:
        """Time the enclosed block as a span; an exception is recorded on the span and re-raised."""
        handle = SpanHandle(span_id=uuid7(), metadata=dict(metadata or {}))
        start = tick()
        error: dict[str, str] | None = None
        try:
            yield handle
        except BaseException as exc:
            if self.sampled:
                error = _error_info(exc)
            raise
        finally:
            if self.sampled:
                self._append(
                    SpanRecord(
                        span_id=handle.span_id,
                        parent_span_id=parent,
                        name=name,
                        type=type,
                        start=self.at(start),
                        end=self.at(tick()),
                        input=dict(input) if input is not None else None,
                        output=handle.output,
                        metadata=handle.metadata or None,
                        usage=handle.usage,
                        model=handle.model,
                        error=error,
                    )
                )

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
        """Record a span measured elsewhere (start/end: perf_counter readings or datetimes); returns its id.

        ``type`` defaults to "llm" when a model is given, else "general".
        """
        span_id = uuid7()
        if self.sampled:
            self._append(
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

    def set_output(self, answer: str, metadata: Mapping[str, Any] | None = None) -> None:
        """Record the final answer (and extra trace metadata); marks the trace's end time."""
        self._output = {"answer": answer}
        self._metadata.update(metadata or {})
        self._end = datetime.now(UTC)

    def set_error(self, error: BaseException | str) -> None:
        """Mark the trace as failed; marks its end time unless an output already did."""
        self._error = _error_info(error)
        self._end = self._end or datetime.now(UTC)

    def timings(self) -> dict[str, float]:
        """Seconds per recorded span name (the last span wins on repeated names)."""
        return {s.name: s.duration_s for s in self._spans}

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
            )
        return self._record

    def _append(self, record: SpanRecord) -> None:
        if self._record is None:
            self._spans.append(record)


class Tracer(abc.ABC):
    """Exports finished traces; ``submit`` never blocks the caller and never raises."""

    def start_trace(self, request_id: str, query: str, metadata: Mapping[str, Any] | None = None) -> TraceRecorder:
        """A recorder for one answer, sampled according to this tracer's rate."""
        return TraceRecorder(request_id, query, metadata, sampled=self.should_sample())

    @abc.abstractmethod
    def should_sample(self) -> bool:
        """Whether the next trace should be recorded."""

    @abc.abstractmethod
    def submit(self, recorder: TraceRecorder) -> None:
        """Hand a finished trace over for export; unsampled recorders are ignored."""

    @abc.abstractmethod
    def close(self) -> None:
        """Flush what is queued within a bounded time and stop; safe to call twice."""

    async def aclose(self) -> None:
        """``close`` off the event loop."""
        await asyncio.to_thread(self.close)

    def stats(self) -> dict[str, int]:
        """Counters for logs and metrics."""
        return {"sent": 0, "dropped": 0, "failed": 0, "queued": 0}


class NoopTracer(Tracer):
    """Tracing off: samples nothing, exports nothing."""

    def should_sample(self) -> bool:
        """Never."""
        return False

    def submit(self, recorder: TraceRecorder) -> None:
        """Ignore the trace."""

    def close(self) -> None:
        """Nothing to flush."""


class _Stop:
    """Queue sentinel that wakes the export thread for shutdown."""


_STOP = _Stop()


class OpikTracer(Tracer):
    """Exports traces to Opik from one daemon thread through the `opik` SDK; a bounded queue sheds load."""

    def __init__(
        self,
        project_name: str | None,
        sample_rate: float,
        buffer_size: int = 1000,
        flush_timeout_s: float = 5.0,
    ) -> None:
        if not 0.0 <= sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be within [0, 1], got {sample_rate}")
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be >= 1, got {buffer_size}")
        if flush_timeout_s <= 0:
            # The SDK treats a zero flush timeout as "wait forever".
            raise ValueError(f"flush_timeout_s must be > 0, got {flush_timeout_s}")
        self.project_name = project_name
        self.sample_rate = sample_rate
        self.buffer_size = buffer_size
        self.flush_timeout_s = flush_timeout_s
        self._queue: queue.Queue[TraceRecord | _Stop] = queue.Queue(maxsize=buffer_size)
        self._random = random.Random()
        self._lock = threading.Lock()
        self._sent = self._dropped = self._failed = 0
        self._drop_why = self._fail_why = ""
        self._reported = (0, 0)  # (dropped, failed) at the last report
        self._last_report = -math.inf
        self._closing = threading.Event()
        self._deadline = math.inf
        self._sdk_backlog = 0  # messages the SDK still held after its last flush
        self._parked = 0  # traces the SDK parked for replay since Opik became unreachable
        self._thread = threading.Thread(target=self._run, name="opik-tracer", daemon=True)
        self._thread.start()

    @property
    def sent(self) -> int:
        """Traces Opik confirmed (the SDK's flush succeeded while Opik was reachable)."""
        return self._sent

    @property
    def dropped(self) -> int:
        """Traces never handed to the SDK: buffer full, SDK backlog full, Opik down too long, or closing."""
        return self._dropped

    @property
    def failed(self) -> int:
        """Traces handed to the SDK but not confirmed in time, or parked while Opik is down (it may retry)."""
        return self._failed

    def stats(self) -> dict[str, int]:
        """Counters for logs and metrics."""
        return {
            "sent": self._sent,
            "dropped": self._dropped,
            "failed": self._failed,
            "queued": self._queue.qsize(),
        }

    def should_sample(self) -> bool:
        """True with probability ``sample_rate``."""
        return self.sample_rate >= 1.0 or self._random.random() < self.sample_rate

    def submit(self, recorder: TraceRecorder) -> None:
        """Queue the trace without blocking; when the buffer is full (or closed) it is dropped and counted."""
        try:
            if not recorder.sampled:
                return
            if self._closing.is_set():
                self._count_dropped(1, "tracer closed")
                return
            self._queue.put_nowait(recorder.finish())
        except queue.Full:
            self._count_dropped(1, "buffer full")
        except Exception as exc:
            self._count_dropped(1, f"submit error: {exc!r}")

    def close(self) -> None:
        """Send what is queued, waiting at most ``flush_timeout_s`` (plus a 0.25 s grace); the rest is dropped."""
        if self._closing.is_set():
            return
        self._deadline = time.monotonic() + self.flush_timeout_s
        self._closing.set()
        try:
            self._queue.put_nowait(_STOP)  # wakes the thread if it waits on an empty queue
        except queue.Full:
            pass  # the thread is busy and checks `_closing` after each batch
        self._thread.join(self.flush_timeout_s + 0.25)
        self._count_dropped(self._drain_nowait(), f"not sent within the {self.flush_timeout_s}s close timeout")
        self._report(force=True)
        logger.info("opik tracer closed: %s", self.stats())

    # --- export thread (everything below runs on it) ---

    def _run(self) -> None:
        client = self._connect()
        try:
            while True:
                item = self._queue.get()
                batch = [] if isinstance(item, _Stop) else [item]
                while len(batch) < _MAX_BATCH:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if not isinstance(more, _Stop):
                        batch.append(more)
                if batch:
                    self._export(client, batch)
                self._report()
                if self._closing.is_set():
                    rest = self._drain_nowait_records()
                    if rest and time.monotonic() < self._deadline:
                        self._export(client, rest)
                    elif rest:
                        self._count_dropped(len(rest), "closing")
                    return
        except Exception:
            logger.exception("opik tracer thread crashed; tracing stops")
        finally:
            if client is not None:
                try:
                    # Our flushes already ran; the SDK must not flush again (unbounded) at process exit.
                    client.end(flush=False)
                except Exception:
                    logger.debug("opik client end failed", exc_info=True)

    def _connect(self) -> Any:
        try:
            import opik  # slow import (pulls litellm); kept off the caller's thread

            return opik.Opik(project_name=self.project_name, _show_misconfiguration_message=False)
        except Exception:
            logger.exception("opik client could not be created; traces will be counted as failed")
            return None

    def _export(self, client: Any, batch: list[TraceRecord]) -> None:
        if client is None:
            self._count_failed(len(batch), "no opik client")
            return
        if self._sdk_backlog > self.buffer_size:
            # The SDK's own queue is unbounded in practice; while Opik is slow, wait for it once more and
            # shed this batch rather than let the backlog grow in memory.
            self._flush(client, self._flush_budget())
            if self._sdk_backlog > self.buffer_size:
                self._count_dropped(len(batch), "opik backlog full")
                return
        if _opik_reachable(client):
            self._parked = 0  # the SDK replays what it parked once Opik answers again
        elif self._parked >= self.buffer_size:
            # Opik is down: the SDK would park every trace on disk until it is back; cap that at one buffer.
            self._count_dropped(len(batch), "opik unreachable")
            return
        handed = 0
        for record in batch:
            try:
                self._send(client, record)
                handed += 1
            except Exception:
                logger.debug("opik rejected trace %s", record.trace_id, exc_info=True)
                self._count_failed(1, "sdk error")
        if not handed:
            return
        flushed = self._flush(client, self._flush_budget())
        if flushed and _opik_reachable(client):
            with self._lock:
                self._sent += handed
        elif flushed:
            self._parked += handed
            self._count_failed(handed, "opik unreachable, parked by the sdk for replay")
        else:
            self._count_failed(handed, "flush not confirmed")

    def _flush_budget(self) -> float:
        if not self._closing.is_set():
            return self.flush_timeout_s
        return max(0.05, min(self.flush_timeout_s, self._deadline - time.monotonic()))

    def _flush(self, client: Any, timeout: float) -> bool:
        """The SDK's flush (bounded; never raises); remembers how many messages it still holds."""
        try:
            ok = bool(client.flush(timeout=timeout))
            result = client.last_flush_result
            self._sdk_backlog = result.remaining_queue_size if result is not None else 0
            return ok
        except Exception:
            logger.debug("opik flush failed", exc_info=True)
            return False

    def _send(self, client: Any, record: TraceRecord) -> None:
        client.trace(
            id=record.trace_id,
            name=record.name,
            start_time=record.start,
            end_time=record.end,
            input=record.input,
            output=record.output,
            metadata=record.metadata,
            error_info=record.error,
        )
        for s in record.spans:
            client.span(
                trace_id=record.trace_id,
                id=s.span_id,
                parent_span_id=s.parent_span_id,
                name=s.name,
                type=s.type,
                start_time=s.start,
                end_time=s.end,
                input=s.input,
                output=s.output,
                metadata=s.metadata,
                usage=s.usage,
                model=s.model,
                error_info=s.error,
            )

    def _drain_nowait(self) -> int:
        return len(self._drain_nowait_records())

    def _drain_nowait_records(self) -> list[TraceRecord]:
        out: list[TraceRecord] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return out
            if not isinstance(item, _Stop):
                out.append(item)

    def _count_dropped(self, n: int, why: str) -> None:
        """Count traces never handed to the SDK; never logs, as it runs in the request path (see _report)."""
        if n > 0:
            with self._lock:
                self._dropped += n
                self._drop_why = why

    def _count_failed(self, n: int, why: str) -> None:
        """Count traces handed to the SDK but not confirmed."""
        if n > 0:
            with self._lock:
                self._failed += n
                self._fail_why = why

    def _report(self, force: bool = False) -> None:
        """Log drops and failures since the last report, at most once per _LOG_EVERY_S unless forced."""
        now = time.monotonic()
        with self._lock:
            dropped = self._dropped - self._reported[0]
            failed = self._failed - self._reported[1]
            if not (dropped or failed) or (not force and now - self._last_report < _LOG_EVERY_S):
                return
            self._last_report = now
            self._reported = (self._dropped, self._failed)
            drop_why, fail_why = self._drop_why, self._fail_why
        logger.warning(
            "opik traces: %d dropped (%s), %d not confirmed (%s); totals %s",
            dropped,
            drop_why or "-",
            failed,
            fail_why or "-",
            self.stats(),
        )


def _opik_reachable(client: Any) -> bool:
    """Whether the SDK's connection monitor last saw Opik answer.

    Once that monitor has seen Opik unreachable, the SDK stops sending: it parks messages for replay (in a
    temp SQLite file) and its ``flush`` reports success. The monitor is not public API: this reads the pinned
    SDK's (2.2.122) private attribute and assumes "reachable" if it moved.
    """
    replay_manager = getattr(getattr(client, "_resources", None), "replay_manager", None)
    return bool(getattr(replay_manager, "has_server_connection", True))


def make_tracer(
    enabled: bool,
    sample_rate: float,
    project_name: str | None,
    buffer_size: int,
    *,
    flush_timeout_s: float = 5.0,
) -> Tracer:
    """OpikTracer when tracing is enabled and Opik is configured in the environment, else NoopTracer.

    "Configured" means ``OPIK_URL_OVERRIDE`` or ``OPIK_API_KEY`` is set: unconfigured, the SDK would reach out
    to comet.com and its flushes would block for their full timeout. Also sets SDK defaults (left alone when
    already set) before `opik` is first imported: no Sentry, no analytics, one sender thread, and a bounded
    flush at process exit.
    """
    env = os.environ
    configured = bool(env.get("OPIK_URL_OVERRIDE") or env.get("OPIK_API_KEY"))
    disabled = env.get("OPIK_TRACK_DISABLE", "").strip().lower() in _TRUE
    if not enabled or not configured or disabled or sample_rate <= 0.0:
        logger.info(
            "prompt tracing off (enabled=%s, opik configured=%s, OPIK_TRACK_DISABLE=%s, sample_rate=%s)",
            enabled,
            configured,
            disabled,
            sample_rate,
        )
        return NoopTracer()
    env.setdefault("OPIK_SENTRY_ENABLE", "false")
    env.setdefault("OPIK_ANALYTICS_ENABLE", "false")
    env.setdefault("OPIK_BACKGROUND_WORKERS", "1")
    env.setdefault("OPIK_DEFAULT_FLUSH_TIMEOUT", str(max(1, math.ceil(flush_timeout_s))))
    logger.info(
        "prompt tracing to Opik at %s (project=%s, sample_rate=%s, buffer=%d)",
        env.get("OPIK_URL_OVERRIDE", "comet.com"),
        project_name or env.get("OPIK_PROJECT_NAME", "default"),
        sample_rate,
        buffer_size,
    )
    return OpikTracer(project_name, sample_rate, buffer_size=buffer_size, flush_timeout_s=flush_timeout_s)
