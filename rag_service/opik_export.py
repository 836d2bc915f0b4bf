"""Export of prompt traces (and readers' feedback scores on them) to Opik, off the request path: a bounded queue
drained by one daemon thread.

``submit`` never blocks or raises: when the queue is full, Opik is slow or down, traces are dropped and counted.
The thread hands batches to the SDK (``rag_service.opik_sdk``) and flushes each within ``flush_timeout_s``, so
the SDK's blocking HTTP calls, retries and timeouts only ever stall that thread. ``make_tracer`` picks this
exporter only when Opik is configured, else ``NoopTracer``. Behaviour and counters: docs/tracing.md.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import random
import threading
import time
from collections.abc import Callable

from rag_service.feedback import Feedback
from rag_service.metrics import FEEDBACK_SCORES
from rag_service.opik_sdk import OpikClient, OpikSettings, connect, set_sdk_process_defaults
from rag_service.tracing import NoopTracer, Tracer, TraceRecord, TraceRecorder

logger = logging.getLogger(__name__)

# A drained batch is sent and flushed as one unit; the cap keeps one flush's payload small.
_MAX_BATCH = 64
_LOG_EVERY_S = 10.0


class _Stop:
    """Queue sentinel that wakes the export thread for shutdown."""


_STOP = _Stop()
_Item = TraceRecord | Feedback  # what the queue carries: traces, and reader feedback scores on traces


class OpikTracer(Tracer):
    """Exports traces to Opik from one daemon thread through the `opik` SDK; a bounded queue sheds load."""

    def __init__(
        self,
        settings: OpikSettings,
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
        self.settings = settings
        self.sample_rate = sample_rate
        self.buffer_size = buffer_size
        self.flush_timeout_s = flush_timeout_s
        self._queue: queue.Queue[_Item | _Stop] = queue.Queue(maxsize=buffer_size)
        self._random = random.Random()
        self._lock = threading.Lock()
        self._sent = self._dropped = self._failed = 0
        self._drop_why = self._fail_why = ""
        self._feedback = {"sent": 0, "dropped": 0, "failed": 0}  # feedback scores, counted like traces
        self._feedback_why = ""
        self._reported = (0, 0, 0)  # (dropped, failed, feedback dropped + failed) at the last report
        self._last_report = -math.inf
        self._closing = threading.Event()
        self._deadline = math.inf
        self._parked = 0  # traces the SDK parked for replay since Opik became unreachable
        self._thread = threading.Thread(target=self._run, name="opik-tracer", daemon=True)
        self._thread.start()

    def stats(self) -> dict[str, int]:
        """Counters for logs and metrics: ``sent`` (confirmed by Opik), ``failed`` (handed to the SDK but not
        confirmed in time, or parked by it while Opik is down: it may still deliver them), ``dropped`` (never
        handed to the SDK: buffer full, SDK backlog full, Opik down too long, or closing), ``queued``."""
        return {
            "sent": self._sent,
            "dropped": self._dropped,
            "failed": self._failed,
            "queued": self._queue.qsize(),
        }

    def feedback_stats(self) -> dict[str, int]:
        """Feedback scores, counted as traces are: ``sent``, ``failed``, ``dropped`` (``queued`` is shared: one
        buffer holds both); also in ``rag_feedback_scores_total{outcome}``."""
        with self._lock:
            return dict(self._feedback)

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

    def submit_feedback(self, feedback: Feedback) -> None:
        """Queue a feedback score without blocking, behind the traces already queued (its trace goes first); when
        the buffer is full (or closed) it is dropped and counted."""
        try:
            if self._closing.is_set():
                self._count_dropped(1, "tracer closed", "feedback")
                return
            self._queue.put_nowait(feedback)
        except queue.Full:
            self._count_dropped(1, "buffer full", "feedback")
        except Exception as exc:
            self._count_dropped(1, f"submit error: {exc!r}", "feedback")

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
        self._drop(self._drain_nowait(), f"not sent within the {self.flush_timeout_s}s close timeout")
        self._report(force=True)
        logger.info("opik tracer closed: %s", self.stats())

    # --- export thread (everything below runs on it) ---

    def _run(self) -> None:
        client = connect(self.settings)
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
                    self._dispatch(client, batch)
                self._report()
                if self._closing.is_set():
                    rest = self._drain_nowait()
                    if rest and time.monotonic() < self._deadline:
                        self._dispatch(client, rest)
                    elif rest:
                        self._drop(rest, "closing")
                    return
        except Exception:
            logger.exception("opik tracer thread crashed; tracing stops")
        finally:
            if client is not None:
                client.end()

    def _dispatch(self, client: OpikClient | None, items: list[_Item]) -> None:
        """Export a drained batch: its traces first, then the feedback scores (whose traces may be among them)."""
        traces = [i for i in items if isinstance(i, TraceRecord)]
        scores = [i for i in items if isinstance(i, Feedback)]
        if traces:
            self._export(client, len(traces), "trace", lambda c: self._hand_over_traces(c, traces))
        if scores:
            self._export(client, len(scores), "feedback", lambda c: self._hand_over_scores(c, scores))

    def _export(self, client: OpikClient | None, n: int, kind: str, hand_over: Callable[[OpikClient], int]) -> None:
        """Hand ``n`` items of one kind to the SDK (``hand_over`` returns how many it took), flush, and count."""
        if client is None:
            self._count_failed(n, "no opik client", kind)
            return
        if client.backlog > self.buffer_size:
            # The SDK's own queue is unbounded in practice; while Opik is slow, wait for it once more and
            # shed this batch rather than let the backlog grow in memory.
            client.flush(self._flush_budget())
            if client.backlog > self.buffer_size:
                self._count_dropped(n, "opik backlog full", kind)
                return
        if client.reachable():
            self._parked = 0  # the SDK replays what it parked once Opik answers again
        elif self._parked >= self.buffer_size:
            # Opik is down: the SDK would park every trace on disk until it is back; cap that at one buffer.
            self._count_dropped(n, "opik unreachable", kind)
            return
        handed = hand_over(client)
        if not handed:
            return
        flushed = client.flush(self._flush_budget())
        if flushed and client.reachable():
            self._count_sent(handed, kind)
        elif flushed:
            self._parked += handed
            self._count_failed(handed, "opik unreachable, parked by the sdk for replay", kind)
        else:
            self._count_failed(handed, "flush not confirmed", kind)

    def _hand_over_traces(self, client: OpikClient, batch: list[TraceRecord]) -> int:
        handed = 0
        for record in batch:
            try:
                client.send(record)
                handed += 1
            except Exception:
                logger.debug("opik rejected trace %s", record.trace_id, exc_info=True)
                self._count_failed(1, "sdk error")
        return handed

    def _hand_over_scores(self, client: OpikClient, scores: list[Feedback]) -> int:
        try:
            client.send_feedback(scores)
        except Exception:
            logger.debug("opik rejected %d feedback scores", len(scores), exc_info=True)
            self._count_failed(len(scores), "sdk error", "feedback")
            return 0
        return len(scores)

    def _flush_budget(self) -> float:
        if not self._closing.is_set():
            return self.flush_timeout_s
        return max(0.05, min(self.flush_timeout_s, self._deadline - time.monotonic()))

    def _drain_nowait(self) -> list[_Item]:
        out: list[_Item] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return out
            if not isinstance(item, _Stop):
                out.append(item)

    def _drop(self, items: list[_Item], why: str) -> None:
        """Count drained items as dropped, each by its kind."""
        scores = sum(isinstance(i, Feedback) for i in items)
        self._count_dropped(len(items) - scores, why)
        self._count_dropped(scores, why, "feedback")

    def _count_sent(self, n: int, kind: str = "trace") -> None:
        """Count items Opik confirmed."""
        if kind == "feedback":
            self._count_feedback("sent", n, "")
            return
        with self._lock:
            self._sent += n

    def _count_dropped(self, n: int, why: str, kind: str = "trace") -> None:
        """Count items never handed to the SDK; never logs, as it runs in the request path (see _report)."""
        if n > 0 and kind == "feedback":
            self._count_feedback("dropped", n, why)
        elif n > 0:
            with self._lock:
                self._dropped += n
                self._drop_why = why

    def _count_failed(self, n: int, why: str, kind: str = "trace") -> None:
        """Count items handed to the SDK but not confirmed."""
        if n > 0 and kind == "feedback":
            self._count_feedback("failed", n, why)
        elif n > 0:
            with self._lock:
                self._failed += n
                self._fail_why = why

    def _count_feedback(self, outcome: str, n: int, why: str) -> None:
        with self._lock:
            self._feedback[outcome] += n
            self._feedback_why = why or self._feedback_why
        FEEDBACK_SCORES.labels(outcome).inc(n)

    def _report(self, force: bool = False) -> None:
        """Log drops and failures since the last report, at most once per _LOG_EVERY_S unless forced."""
        now = time.monotonic()
        with self._lock:
            dropped = self._dropped - self._reported[0]
            failed = self._failed - self._reported[1]
            feedback_lost = self._feedback["dropped"] + self._feedback["failed"]
            scores = feedback_lost - self._reported[2]
            if not (dropped or failed or scores) or (not force and now - self._last_report < _LOG_EVERY_S):
                return
            self._last_report = now
            self._reported = (self._dropped, self._failed, feedback_lost)
            drop_why, fail_why, feedback_why = self._drop_why, self._fail_why, self._feedback_why
        logger.warning(
            "opik traces: %d dropped (%s), %d not confirmed (%s); totals %s; "
            "feedback scores: %d dropped or not confirmed (%s); totals %s",
            dropped,
            drop_why or "-",
            failed,
            fail_why or "-",
            self.stats(),
            scores,
            feedback_why or "-",
            self.feedback_stats(),
        )


def make_tracer(
    enabled: bool,
    sample_rate: float,
    project_name: str | None,
    buffer_size: int,
    *,
    flush_timeout_s: float = 5.0,
) -> Tracer:
    """OpikTracer when tracing is enabled and Opik is configured by its own ``OPIK_*`` variables, else NoopTracer.

    The client's settings are read here, once, and passed to it explicitly; the SDK's process-wide defaults are
    set before its first import (``set_sdk_process_defaults``).
    """
    settings = OpikSettings.from_env(os.environ, project_name)
    if not enabled or not settings.configured or settings.track_disable or sample_rate <= 0.0:
        logger.info(
            "prompt tracing off (enabled=%s, opik configured=%s, OPIK_TRACK_DISABLE=%s, sample_rate=%s)",
            enabled,
            settings.configured,
            settings.track_disable,
            sample_rate,
        )
        return NoopTracer()
    set_sdk_process_defaults(flush_timeout_s)
    logger.info(
        "prompt tracing to Opik at %s (project=%s, sample_rate=%s, buffer=%d)",
        settings.host or "comet.com",
        settings.project_name or "default",
        sample_rate,
        buffer_size,
    )
    return OpikTracer(settings, sample_rate, buffer_size=buffer_size, flush_timeout_s=flush_timeout_s)
