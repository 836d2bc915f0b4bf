"""Vector stores: the interface and its two adapters (embedded qdrant-edge, qdrant-client)."""

from __future__ import annotations

from rag_service.store.base import VectorStore, collection_name, point_id

__all__ = ["DEFAULT_PATH", "VectorStore", "collection_name", "open_store", "point_id"]

DEFAULT_PATH = "var/qdrant"
BACKENDS = ("edge", "client")


def open_store(
    url: str | None = None,
    api_key: str | None = None,
    path: str = DEFAULT_PATH,
    backend: str = "edge",
    collection_prefix: str = "",
    *,
    shard_number: int = 1,
    replication_factor: int = 1,
) -> VectorStore:
    """A store: "edge" (embedded, at `path`) or "client" (a server at `url`, else local mode at `path`).

    `shard_number` and `replication_factor` shape the collections a client store creates on a server.
    """
    if backend == "edge":
        from rag_service.store.edge import EdgeStore

        return EdgeStore(path, collection_prefix=collection_prefix)
    if backend == "client":
        from rag_service.store.client import ClientStore

        return ClientStore(
            url=url,
            api_key=api_key,
            path=path,
            collection_prefix=collection_prefix,
            shard_number=shard_number,
            replication_factor=replication_factor,
        )
    raise ValueError(f"unknown store backend {backend!r}; expected one of {', '.join(BACKENDS)}")
