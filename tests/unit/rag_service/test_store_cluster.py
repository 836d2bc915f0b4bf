"""Collections on a Qdrant server or cluster get the configured shard number and replication factor.

No Qdrant server is installable here, so the client talks to a loopback stand-in that answers the few REST
calls collection setup makes and records what it was sent.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from rag_service.settings import Settings
from rag_service.store import open_store
from rag_service.store.client import ClientStore


class _Qdrant(BaseHTTPRequestHandler):
    server: _Server

    def _answer(self, result: Any, *, raw: bool = False) -> None:
        data = json.dumps(result if raw else {"result": result, "status": "ok", "time": 0.0}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.endswith("/exists"):
            self._answer({"exists": False})
        else:  # GET /: the client's version check
            self._answer({"title": "qdrant", "version": "1.20.0"}, raw=True)

    def do_PUT(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        self.server.requests.append((self.path.split("?")[0], body))
        self._answer(True if self.path.split("?")[0].count("/") == 2 else {"operation_id": 1, "status": "completed"})

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    requests: list[tuple[str, dict[str, Any]]]


@pytest.fixture
def qdrant() -> Iterator[_Server]:
    """A loopback stand-in for a Qdrant server's REST API."""
    server = _Server(("127.0.0.1", 0), _Qdrant)
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    # qdrant-client checks the server version on a background thread: let it finish against us.
    for other in threading.enumerate():
        if "_check_compatibility" in other.name:
            other.join(10)
    server.shutdown()
    server.server_close()
    thread.join()


async def test_collections_are_created_with_the_settings_shards_and_replicas(
    qdrant: _Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAG_QDRANT_SHARDS", "6")
    monkeypatch.setenv("RAG_QDRANT_REPLICATION_FACTOR", "2")
    s = Settings()
    store = open_store(
        url=f"http://127.0.0.1:{qdrant.server_address[1]}",
        backend="client",
        collection_prefix="t_",
        shard_number=s.qdrant_shards,
        replication_factor=s.qdrant_replication_factor,
    )
    try:
        assert isinstance(store, ClientStore)
        await store.ensure_collections()
    finally:
        await store.aclose()

    created = {path: body for path, body in qdrant.requests if path.count("/") == 2}
    assert sorted(created) == ["/collections/t_articles", "/collections/t_posts", "/collections/t_repositories"]
    for body in created.values():
        assert body["shard_number"] == 6
        assert body["replication_factor"] == 2
        assert body["vectors"] == {"size": 384, "distance": "Cosine"}
    indexes = [path for path, _ in qdrant.requests if path.endswith("/index")]
    assert indexes, "payload indexes are created on a server"


async def test_local_mode_ignores_the_cluster_layout() -> None:
    store = open_store(path=":memory:", backend="client", shard_number=4, replication_factor=3)
    try:
        await store.ensure_collections()
        assert await store.count() == 0
    finally:
        await store.aclose()
