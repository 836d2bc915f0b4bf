"""Admission control: a limit of work in flight with a bounded, time-limited wait queue in front of it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from servekit.errors import Overloaded


class Admission:
    """At most `max_concurrent` holders; at most `max_queued` waiters, each for at most `timeout_s`.

    Beyond the queue, callers are refused at once: unbounded queueing only turns overload into timeouts.
    """

    def __init__(self, max_concurrent: int, max_queued: int = 0, timeout_s: float = 30.0):
        self.max_concurrent = max_concurrent
        self.max_queued = max_queued
        self._timeout = timeout_s
        self._slots = asyncio.Semaphore(max_concurrent)
        self.in_flight = 0
        self.waiting = 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[float]:
        """Holds a slot for the body; yields the seconds spent waiting for it. Raises Overloaded."""
        start = time.perf_counter()
        if self._slots.locked():
            if self.waiting >= self.max_queued:
                raise Overloaded(
                    f"server busy: {self.in_flight} requests in flight and {self.waiting} queued; retry later"
                )
            self.waiting += 1
            try:
                # Not wait_for: on 3.11 it can swallow a cancel that races the acquire, and the cancelled
                # caller would then run its whole generation.
                async with asyncio.timeout(self._timeout):
                    await self._slots.acquire()
            except TimeoutError:
                raise Overloaded(f"server busy: no slot within {self._timeout:g} s; retry later") from None
            finally:
                self.waiting -= 1
        else:
            await self._slots.acquire()
        self.in_flight += 1
        try:
            yield time.perf_counter() - start
        finally:
            self.in_flight -= 1
            self._slots.release()
