"""Background loops and waits end when cancelled, whenever the cancel lands (asyncio.wait_for on 3.11
could swallow it, which once hung a shutdown forever)."""

from __future__ import annotations

import asyncio

import pytest

from servekit.admission import Admission
from servekit.grpc_app import GrpcApp, watch_health


async def healthy() -> bool:
    await asyncio.sleep(0)
    return True


async def test_the_health_watch_stops_whenever_it_is_cancelled():
    app = GrpcApp("test.Service")
    for ticks in range(40):  # cancel at every point of the check / sleep cycle
        task = asyncio.create_task(watch_health(app, healthy, interval_s=0))
        for _ in range(ticks):
            await asyncio.sleep(0)
        task.cancel()
        async with asyncio.timeout(5):
            with pytest.raises(asyncio.CancelledError):
                await task


async def test_a_waiter_cancelled_as_its_slot_frees_does_not_keep_the_slot():
    admission = Admission(1, max_queued=1, timeout_s=5)
    for _ in range(40):
        holder_entered = asyncio.Event()
        release = asyncio.Event()

        async def hold(entered: asyncio.Event, release: asyncio.Event) -> None:
            async with admission.slot():
                entered.set()
                await release.wait()

        async def wait() -> None:
            async with admission.slot():
                await asyncio.sleep(3600)

        holder = asyncio.create_task(hold(holder_entered, release))
        await holder_entered.wait()
        waiter = asyncio.create_task(wait())
        await asyncio.sleep(0)
        release.set()
        await holder
        waiter.cancel()  # lands as the slot is handed over
        async with asyncio.timeout(5):
            with pytest.raises(asyncio.CancelledError):
                await waiter
        assert admission.in_flight == 0 and not admission._slots.locked()
