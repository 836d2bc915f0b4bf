"""servekit.grpc_app.watch_health: a failing check is logged once per change of its error, not at every poll."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from servekit.grpc_app import GrpcApp, watch_health


class Check:
    """A health check that plays a script of outcomes (True, False, or an exception), then stays on the last."""

    def __init__(self, *script: bool | Exception):
        self.script = list(script)
        self.calls = 0
        self.done = asyncio.Event()

    async def __call__(self) -> bool:
        outcome = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        if self.calls >= len(self.script) + 2:
            self.done.set()
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


async def watch(check: Check) -> None:
    app = GrpcApp("test.Watched")
    task = asyncio.create_task(watch_health(app, check, 0.001))
    try:
        await asyncio.wait_for(check.done.wait(), 30)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_failing_check_is_logged_once_per_change_of_error(caplog: pytest.LogCaptureFixture) -> None:
    down = ConnectionRefusedError("the store refused the connection")
    other = ValueError("collection missing")
    check = Check(down, down, down, True, down, down, other, other)
    with caplog.at_level(logging.WARNING, logger="servekit.grpc_app"):
        await watch(check)
    failures = [r for r in caplog.records if r.getMessage() == "health check failed"]
    assert [r.error for r in failures] == [repr(down), repr(down), repr(other)]  # type: ignore[attr-defined]
    assert [r.exc_info[1] for r in failures if r.exc_info] == [down, down, other]
    assert check.calls >= len(check.script) + 2  # polled on after the last change, with nothing more logged
