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


async def test_a_stream_closed_at_its_yield_counts_as_cancelled():
    # grpc.aio closes a server stream's generator (GeneratorExit at its yield) when the client's cancel lands
    # while a message is being sent; the stream must still be counted, or it vanishes from the metrics.
    from prometheus_client import CollectorRegistry, Counter

    from servekit.rpc import RpcKit

    requests = Counter("t_requests", "test", ["method", "code"], registry=CollectorRegistry())
    kit = RpcKit("test.domain", requests)

    class Context:
        def invocation_metadata(self) -> tuple[()]:
            return ()

        def set_trailing_metadata(self, metadata: object) -> None:
            pass

    @kit.stream
    async def Numbers(servicer: object, request: object, context: object):  # named as a gRPC method
        for n in range(10):
            yield n

    stream = Numbers(None, object(), Context())
    assert await anext(stream) == 0
    await stream.aclose()  # as grpc.aio does
    assert requests.labels("Numbers", "CANCELLED")._value.get() == 1
    assert requests.labels("Numbers", "OK")._value.get() == 0
