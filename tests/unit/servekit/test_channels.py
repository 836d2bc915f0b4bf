"""Retries of servekit.channels.client_channel against a real grpc.aio server on loopback, counted at the server:
a failure no handler of ours answered is retried within the budget; an error our handler answered is not."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest
from prometheus_client import Counter

from servekit.channels import client_channel, service_config
from servekit.errors import Unavailable
from servekit.rpc import RpcKit

METHOD = "/test.Flaky/Call"


class Flaky:
    """A one-method service that always fails UNAVAILABLE and counts the attempts it saw."""

    def __init__(self, through_rpckit: bool):
        self.attempts = 0
        self.through_rpckit = through_rpckit
        kit = RpcKit("test.servekit", Counter("flaky_requests", "test", ["method", "code"], registry=None))

        @kit.unary
        async def call(servicer: Any, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            raise Unavailable("my dependency is down")

        self._ours = call

    async def handle(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        """Counts the attempt; fails as our servicers do (RpcKit) or as a server going away would."""
        self.attempts += 1
        if self.through_rpckit:
            return await self._ours(self, request, context)
        await context.abort(grpc.StatusCode.UNAVAILABLE, "going away")
        raise AssertionError("unreachable")


@asynccontextmanager
async def serving(flaky: Flaky) -> AsyncIterator[str]:
    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(flaky.handle)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Flaky", {"Call": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


async def attempts_per_call(flaky: Flaky, target: str, calls: int) -> list[int]:
    """Makes `calls` calls one after the other on one channel; the attempts the server saw for each."""
    seen = []
    async with client_channel(target) as channel:
        call = channel.unary_unary(METHOD)
        for _ in range(calls):
            before = flaky.attempts
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await call(b"", timeout=30)
            assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
            seen.append(flaky.attempts - before)
    return seen


async def test_a_failure_no_handler_answered_is_retried_until_the_budget_is_spent() -> None:
    flaky = Flaky(through_rpckit=False)
    async with serving(flaky) as target:
        seen = await attempts_per_call(flaky, target, 6)
    # 10 tokens, one per failed attempt, retries only while above 5: 3 attempts, then 2, then one a call.
    assert seen == [3, 2, 1, 1, 1, 1]


async def test_an_error_our_handler_answered_is_never_retried() -> None:
    flaky = Flaky(through_rpckit=True)
    async with serving(flaky) as target:
        seen = await attempts_per_call(flaky, target, 3)
    assert seen == [1, 1, 1]  # the handler's status carried grpc-retry-pushback-ms: -1


def test_the_service_config_has_a_retry_budget_and_retries_only_what_never_reached_a_handler() -> None:
    config = service_config()
    assert config["retryThrottling"] == {"maxTokens": 10, "tokenRatio": 0.1}
    [method] = config["methodConfig"]
    assert method["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE", "CANCELLED"]
    assert method["retryPolicy"]["maxAttempts"] == 3
    assert "retryThrottling" not in service_config(max_attempts=1)
