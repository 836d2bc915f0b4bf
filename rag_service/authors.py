"""The authors in the store, as one replica knows them: cached, refreshed in the background, looked up by name."""

from __future__ import annotations

import asyncio
import logging

from rag_service.errors import InvalidArgument
from rag_service.pipeline.self_query import normalize
from rag_service.store.base import VectorStore
from rag_service.tracing import tick
from rag_service.types import Author

log = logging.getLogger(__name__)


class AuthorList:
    """Authors in the store, cached per replica for at most `refresh_s` (RAG_AUTHORS_REFRESH_S)."""

    def __init__(self, store: VectorStore, refresh_s: float):
        self.store = store
        self.refresh_s = refresh_s
        self._authors: list[Author] | None = None
        self._authors_at = 0.0  # tick() of the list's reading
        self._refresh: asyncio.Task[list[Author]] | None = None

    async def get(self) -> list[Author]:
        """The list: an older one is still answered (no request waits on the store) while one refresh, shared by
        every caller, reads it again; only a replica without a list waits for it. Ingestion through this
        replica refreshes it at once (forget)."""
        stale = self._authors is None or tick() - self._authors_at >= self.refresh_s
        if stale and self._refresh is None:
            self._refresh = asyncio.create_task(self._read())
            self._refresh.add_done_callback(_log_failure)
        if self._authors is None and self._refresh is not None:
            return await asyncio.shield(self._refresh)
        return self._authors or []

    async def _read(self) -> list[Author]:
        started = tick()
        try:
            authors = await self.store.authors()
        finally:
            current = self._refresh is asyncio.current_task()  # not forgotten while reading
            if current:
                self._refresh = None
        if current:
            self._authors, self._authors_at = authors, started
        return authors

    def forget(self) -> None:
        """Drops the cache after the store changed: the next caller waits for a list read from now on."""
        self._authors, self._refresh = None, None

    async def find(self, name: str) -> Author:
        """The store's author with this id or full name; InvalidArgument for one the store does not have (asked
        again before refusing: the cache may predate the author's ingestion)."""
        wanted = normalize(name)
        for fresh in (False, True):
            if fresh:
                self.forget()
            authors = await self.get()
            for author in authors:
                if wanted in (normalize(author.id), normalize(author.full_name)):
                    return author
        known = ", ".join(a.full_name for a in authors) or "none yet"
        raise InvalidArgument({"options.author": f"unknown author {name!r}; authors in the store: {known}"})


def _log_failure(task: asyncio.Task[list[Author]]) -> None:
    # A background refresh has no caller to raise to: the stale list stays and the next request tries again.
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.warning("reading the author list failed: %s", exc)
