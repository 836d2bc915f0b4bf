"""A loopback stand-in for the Opik backend that speaks its REST routes and records what the SDK sends.

The real `opik` SDK is pointed at it with ``OpikSettings(host=<FakeOpik.url>)`` or, through ``make_tracer``,
``OPIK_URL_OVERRIDE=<FakeOpik.url>`` (the base already ends in ``/api``, as a self-hosted Opik's does).
Routes answered like the real server:

- ``GET  /api/is-alive/ping``              → 200 ``{"healthy": true}`` (the SDK's connection monitor)
- ``POST /api/v1/private/traces/batch``    → 204, body ``{"traces": [...]}`` (gzip when large)
- ``POST /api/v1/private/spans/batch``     → 204, body ``{"spans": [...]}``
- ``POST /api/v1/private/traces`` / ``spans`` (unbatched creates) → 201
- ``PATCH`` on a trace or span               → 204
- ``PUT  /api/v1/private/traces/feedback-scores`` → 204, body ``{"scores": [...]}`` (trace feedback scores)
- anything else                               → 200 ``{}``, and the route is logged in ``unknown``
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_API = "/api"
_TRACE_SCORES = "/v1/private/traces/feedback-scores"


class FakeOpik:
    """A threaded loopback HTTP server that records Opik traces and spans; knobs make it slow or failing."""

    def __init__(self, *, delay_s: float = 0.0, status: int | None = None) -> None:
        self.delay_s = delay_s
        # When set, every ingest route (not the ping) answers with this status instead of success.
        self.status = status
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request, recorded on arrival
        self.unknown: list[tuple[str, str]] = []
        self._traces: list[dict[str, Any]] = []
        self._spans: list[dict[str, Any]] = []
        self._scores: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._server = _QuietServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-opik", daemon=True
        )

    @property
    def port(self) -> int:
        """The loopback port the server listens on."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The base URL to give the SDK as its host (``OPIK_URL_OVERRIDE``)."""
        return f"http://127.0.0.1:{self.port}{_API}"

    @property
    def traces(self) -> list[dict[str, Any]]:
        """Every trace received so far, as the JSON objects the SDK sent."""
        with self._lock:
            return list(self._traces)

    @property
    def spans(self) -> list[dict[str, Any]]:
        """Every span received so far, as the JSON objects the SDK sent."""
        with self._lock:
            return list(self._spans)

    @property
    def feedback_scores(self) -> list[dict[str, Any]]:
        """Every trace feedback score received so far (``id`` is the trace's), as the JSON objects the SDK sent."""
        with self._lock:
            return list(self._scores)

    @property
    def thread_ids(self) -> list[str | None]:
        """The thread id of every trace received so far (None where a trace has none), in arrival order."""
        with self._lock:
            return [t.get("thread_id") for t in self._traces]

    def wait_for_request(self, path_suffix: str, timeout_s: float = 5.0) -> bool:
        """Block until a request whose path ends with ``path_suffix`` arrived (answered or not)."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not any(p.endswith(path_suffix) for _, p in self.requests):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def wait_for(self, *, traces: int = 0, spans: int = 0, scores: int = 0, timeout_s: float = 5.0) -> bool:
        """Block until at least this many traces, spans and feedback scores arrived; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while len(self._traces) < traces or len(self._spans) < spans or len(self._scores) < scores:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def start(self) -> FakeOpik:
        """Start serving in a daemon thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting connections and answer delayed requests at once.

        Open keep-alive connections stay served (by daemon threads) so that a straggling SDK thread of an
        already-ended client, e.g. its connection monitor's last ping, gets an answer rather than a reset.
        """
        self._stopping.set()
        self._server.shutdown()
        self._thread.join(timeout=5)
        # Closing the listener resets connections still waiting in its accept backlog (a loud error in the
        # SDK's connection monitor); accept and serve those first. Later connects are refused, which it
        # handles quietly.
        self._server.socket.setblocking(False)
        while True:
            try:
                request, address = self._server.get_request()
            except OSError:
                break
            request.setblocking(True)
            self._server.process_request(request, address)
        self._server.server_close()

    def _arrived(self, method: str, path: str) -> None:
        with self._changed:
            self.requests.append((method, path))
            self._changed.notify_all()

    def _store(self, method: str, path: str, body: Any) -> None:
        with self._changed:
            if isinstance(body, dict):
                if path.endswith("/v1/private/traces/batch"):
                    self._traces.extend(body.get("traces", []))
                elif path.endswith("/v1/private/spans/batch"):
                    self._spans.extend(body.get("spans", []))
                elif method == "POST" and path.endswith("/v1/private/traces"):
                    self._traces.append(body)
                elif method == "POST" and path.endswith("/v1/private/spans"):
                    self._spans.append(body)
                elif method == "PUT" and path.endswith(_TRACE_SCORES):
                    self._scores.extend(body.get("scores", []))
            self._changed.notify_all()


@contextmanager
def running_fake_opik(*, delay_s: float = 0.0, status: int | None = None) -> Iterator[FakeOpik]:
    """Run a FakeOpik for the duration of a ``with`` block."""
    fake = FakeOpik(delay_s=delay_s, status=status).start()
    try:
        yield fake
    finally:
        fake.stop()


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up mid-request is not a failure worth a traceback."""


def _handler_for(fake: FakeOpik) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Keep test output quiet; requests are recorded on the fake instead."""

        def _read_json(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if self.headers.get("Content-Encoding", "").lower() == "gzip":
                raw = gzip.decompress(raw)
            return json.loads(raw) if raw else None

        def _answer(self, status: int, body: Any = None) -> None:
            payload = b"" if body is None or status == 204 else json.dumps(body).encode()
            self.send_response(status)
            if payload:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _handle(self, method: str) -> None:
            path = self.path.split("?", 1)[0]
            body = self._read_json() if method in ("POST", "PATCH", "PUT") else None
            fake._arrived(method, path)
            if path.endswith("/is-alive/ping"):
                self._answer(200, {"healthy": True})
                return
            if fake.delay_s:
                fake._stopping.wait(fake.delay_s)
            if fake._stopping.is_set():
                self.close_connection = True
            if fake.status is not None:
                self._answer(fake.status, {"errors": ["fake opik failure"]})
                return
            fake._store(method, path, body)
            if path.endswith(("/v1/private/traces/batch", "/v1/private/spans/batch")):
                self._answer(204)
            elif method == "POST" and path.endswith(("/v1/private/traces", "/v1/private/spans")):
                self._answer(201)
            elif method == "PATCH" and "/v1/private/" in path:
                self._answer(204)
            elif method == "PUT" and path.endswith(_TRACE_SCORES):
                self._answer(204)
            else:
                with fake._lock:
                    fake.unknown.append((method, path))
                self._answer(200, {})

        def do_GET(self) -> None:
            """Answer a GET."""
            self._handle("GET")

        def do_POST(self) -> None:
            """Answer a POST."""
            self._handle("POST")

        def do_PATCH(self) -> None:
            """Answer a PATCH."""
            self._handle("PATCH")

        def do_PUT(self) -> None:
            """Answer a PUT."""
            self._handle("PUT")

    return _Handler
