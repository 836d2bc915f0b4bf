"""The `opik` SDK behind one small adapter: its configuration, its client, and the few calls the exporter makes.

Everything that knows the SDK's names lives here; ``rag_service.opik_export`` decides what to send and when.
The SDK's HTTP calls block (with their own retries and timeouts), so ``connect`` and every ``OpikClient`` method
run on the exporter's thread, never in the request path.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rag_service.feedback import Feedback
from rag_service.tracing import TraceRecord

logger = logging.getLogger(__name__)

_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True, slots=True)
class OpikSettings:
    """Where traces go: the client's configuration, handed to ``opik.Opik`` explicitly (None: the SDK's default)."""

    host: str | None = None  # the API base, e.g. http://host:5173/api for a self-hosted Opik
    api_key: str | None = None
    workspace: str | None = None
    project_name: str | None = None
    track_disable: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str], project_name: str | None = None) -> OpikSettings:
        """Read Opik's own variables (``OPIK_URL_OVERRIDE``, ``OPIK_API_KEY``, ``OPIK_WORKSPACE``,
        ``OPIK_PROJECT_NAME``, ``OPIK_TRACK_DISABLE``); a given ``project_name`` wins over the variable."""
        return cls(
            host=env.get("OPIK_URL_OVERRIDE") or None,
            api_key=env.get("OPIK_API_KEY") or None,
            workspace=env.get("OPIK_WORKSPACE") or None,
            project_name=project_name or env.get("OPIK_PROJECT_NAME") or None,
            track_disable=env.get("OPIK_TRACK_DISABLE", "").strip().lower() in _TRUE,
        )

    @property
    def configured(self) -> bool:
        """Whether an Opik is named; unconfigured, the SDK would reach out to comet.com and block its flushes."""
        return bool(self.host or self.api_key)


def set_sdk_process_defaults(flush_timeout_s: float) -> None:
    """Quiet SDK defaults for this process, each left alone when already set: no Sentry, no analytics, one sender
    thread, and a bounded flush at process exit. Call it before `opik` is first imported.

    The one place that writes ``os.environ``, because the SDK offers no other way: it decides on Sentry while
    ``import opik`` runs, from the environment or ``~/.opik.config`` only; ``opik.Opik(...)`` takes no sender
    thread count or flush timeout; and its in-process override (``opik.config.update_session_config``,
    undocumented) outranks the environment, so it would also override an operator's own ``OPIK_*`` settings.
    """
    env = os.environ
    env.setdefault("OPIK_SENTRY_ENABLE", "false")
    env.setdefault("OPIK_ANALYTICS_ENABLE", "false")
    env.setdefault("OPIK_BACKGROUND_WORKERS", "1")
    env.setdefault("OPIK_DEFAULT_FLUSH_TIMEOUT", str(max(1, math.ceil(flush_timeout_s))))


def connect(settings: OpikSettings) -> OpikClient | None:
    """Import the SDK and create its client (seconds: the import pulls litellm); None, logged, when that fails."""
    try:
        import opik

        client = opik.Opik(
            project_name=settings.project_name,
            workspace=settings.workspace,
            host=settings.host,
            api_key=settings.api_key,
            _show_misconfiguration_message=False,  # we decide what "configured" means (OpikSettings.configured)
        )
    except Exception:
        logger.exception("opik client could not be created; traces will be counted as failed")
        return None
    return OpikClient(client)


class OpikClient:
    """The SDK's low-level client as the exporter uses it: hand over records, flush within a bound, end."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.backlog = 0  # messages the SDK still held after its last flush

    def send(self, record: TraceRecord) -> None:
        """Queue one trace and its spans in the SDK (with our ids and times); raises if the SDK rejects them."""
        self._client.trace(
            id=record.trace_id,
            name=record.name,
            start_time=record.start,
            end_time=record.end,
            input=record.input,
            output=record.output,
            metadata=record.metadata,
            error_info=record.error,
            thread_id=record.thread_id,
        )
        for s in record.spans:
            self._client.span(
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

    def send_feedback(self, scores: list[Feedback]) -> None:
        """Queue feedback scores on their traces in the SDK (in the client's project; the reason only when there is
        one); raises if the SDK rejects them."""
        self._client.log_traces_feedback_scores(
            [
                {"id": f.trace_id, "name": f.name, "value": f.value} | ({"reason": f.reason} if f.reason else {})
                for f in scores
            ]
        )

    def flush(self, timeout: float) -> bool:
        """The SDK's flush, bounded by ``timeout`` seconds; never raises. Updates ``backlog``."""
        try:
            ok = bool(self._client.flush(timeout=timeout))
            result = self._client.last_flush_result
            self.backlog = result.remaining_queue_size if result is not None else 0
            return ok
        except Exception:
            logger.debug("opik flush failed", exc_info=True)
            return False

    def reachable(self) -> bool:
        """Whether the SDK's connection monitor last saw Opik answer.

        Once that monitor has seen Opik unreachable, the SDK stops sending: it parks messages for replay (in a
        temp SQLite file) and its ``flush`` reports success. The SDK has no public API for the monitor's state:
        this reads the pinned SDK's (2.2.122) private attribute, and assumes "reachable" if it moved.
        """
        replay_manager = getattr(getattr(self._client, "_resources", None), "replay_manager", None)
        return bool(getattr(replay_manager, "has_server_connection", True))

    def end(self) -> None:
        """Release the client without flushing (ours already ran; the SDK's own would be unbounded); never raises."""
        try:
            self._client.end(flush=False)
        except Exception:
            logger.debug("opik client end failed", exc_info=True)
