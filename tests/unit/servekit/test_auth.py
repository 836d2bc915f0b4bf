"""Bearer-token authentication: the constant-time check, the server interceptor over real gRPC (unary and
streaming RPCs, open health and reflection), and the client interceptor that sends the token."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from pydantic import SecretStr

from llm_service.backends.echo import EchoBackend
from llm_service.server import LlmServer
from llm_service.settings import Settings
from llmtwin.llm.v1 import llm_service_pb2 as pb
from llmtwin.llm.v1 import llm_service_pb2_grpc
from rag_service.errors import ServiceError
from rag_service.llm_client import LlmClient, Prompt
from rag_service.types import Generation, GenerationParameters
from servekit.auth import BearerTokens, Unauthenticated, client_interceptors, server_interceptors
from servekit.errors import error_reason
from servekit.tls import open_channel

TOKEN = "tok-6b1f0c2e-the-real-one"
OTHER = "tok-rotating-next"


def test_tokens_are_matched_exactly_and_auth_is_off_without_any() -> None:
    tokens = BearerTokens([SecretStr(TOKEN), OTHER, ""])
    assert tokens and tokens.accepts(TOKEN) and tokens.accepts(OTHER)
    for wrong in ("", TOKEN[:-1], TOKEN + "x", TOKEN.upper(), "tok"):
        assert not tokens.accepts(wrong)
    tokens.check(f"Bearer {TOKEN}")
    tokens.check(f"bearer   {OTHER} ")  # the scheme is case-insensitive (RFC 7235)
    assert not BearerTokens([]) and not BearerTokens([""])
    BearerTokens([]).check("")  # off: anything passes
    assert server_interceptors([], "x") == [] and client_interceptors(None) == [] and client_interceptors("") == []


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("", "MISSING_TOKEN"),
        (TOKEN, "BAD_SCHEME"),
        ("Basic dXNlcjpwdw==", "BAD_SCHEME"),
        ("Bearer ", "BAD_SCHEME"),
        ("Bearer nope", "INVALID_TOKEN"),
    ],
)
def test_refusals_say_why_without_echoing_what_was_sent(header: str, reason: str) -> None:
    with pytest.raises(Unauthenticated) as caught:
        BearerTokens([TOKEN]).check(header)
    assert caught.value.reason == reason
    assert TOKEN not in caught.value.message and "nope" not in caught.value.message


@asynccontextmanager
async def llm_server(**overrides: object) -> AsyncIterator[str]:
    """An LLM service (echo backend) on a loopback port with these settings; its target."""
    settings = Settings(
        port=0, metrics_port=0, health_interval_s=0.2, shutdown_grace_s=1, shutdown_drain_s=0, **overrides
    )  # type: ignore[arg-type]
    server = LlmServer(settings, EchoBackend())
    port = await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop()


def _request() -> pb.GenerateRequest:
    messages = pb.ChatMessages(messages=[pb.ChatMessage(role=pb.ROLE_USER, content="hello there")])
    return pb.GenerateRequest(messages=messages, parameters=pb.GenerationParameters(max_new_tokens=3))


async def test_unary_and_streaming_calls_need_a_valid_token(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with llm_server(auth_tokens=f"{TOKEN},{OTHER}") as target, grpc.aio.insecure_channel(target) as channel:
        stub = llm_service_pb2_grpc.LlmServiceStub(channel)
        for metadata, reason in [((), "MISSING_TOKEN"), ((("authorization", "Bearer wrong"),), "INVALID_TOKEN")]:
            with pytest.raises(grpc.aio.AioRpcError) as unary:
                await stub.GetModelInfo(pb.GetModelInfoRequest(), metadata=metadata, timeout=5)
            assert unary.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert error_reason(unary.value) == reason
            with pytest.raises(grpc.aio.AioRpcError) as streaming:
                _ = [m async for m in stub.GenerateStream(_request(), metadata=metadata, timeout=5)]
            assert streaming.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "bearer" in (streaming.value.details() or "").lower()

        for token in (TOKEN, OTHER):
            good = (("authorization", f"Bearer {token}"),)
            assert (await stub.GetModelInfo(pb.GetModelInfoRequest(), metadata=good, timeout=5)).model_id == "echo"
            messages = [m async for m in stub.GenerateStream(_request(), metadata=good, timeout=5)]
            assert messages[-1].HasField("final")
    assert "unauthenticated call refused" in caplog.text
    assert TOKEN not in caplog.text and OTHER not in caplog.text


async def _health(channel: grpc.aio.Channel) -> grpc.StatusCode:
    try:
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def _reflection(channel: grpc.aio.Channel) -> grpc.StatusCode:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    try:
        call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
        async for _ in call:
            pass
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def test_health_and_reflection_stay_open_unless_configured_closed() -> None:
    async with llm_server(auth_tokens=TOKEN) as target, grpc.aio.insecure_channel(target) as channel:
        assert await _health(channel) == grpc.StatusCode.OK
        assert await _reflection(channel) == grpc.StatusCode.OK
    closed = {"auth_tokens": TOKEN, "auth_open_health": False, "auth_open_reflection": False}
    async with llm_server(**closed) as target:
        async with grpc.aio.insecure_channel(target) as channel:
            assert await _health(channel) == grpc.StatusCode.UNAUTHENTICATED
            assert await _reflection(channel) == grpc.StatusCode.UNAUTHENTICATED  # bidirectional streaming
        async with open_channel(target, interceptors=client_interceptors(SecretStr(TOKEN))) as channel:
            assert await _health(channel) == grpc.StatusCode.OK
            assert await _reflection(channel) == grpc.StatusCode.OK


async def test_the_rag_services_llm_client_sends_its_token() -> None:
    prompt = Prompt(messages=(("user", "hello there"),))
    params = GenerationParameters(max_new_tokens=3)
    async with llm_server(auth_tokens=TOKEN, auth_open_health=False) as target:
        client = LlmClient(target, token=SecretStr(TOKEN))
        try:
            assert await client.check_health()
            assert (await client.generate(prompt, params, metadata=(("x-request-id", "r1"),))).text
            assert isinstance([m async for m in client.stream(prompt, params)][-1], Generation)
        finally:
            await client.aclose()
        wrong = LlmClient(target, token=SecretStr("not-it"))
        try:
            assert not await wrong.check_health()
            with pytest.raises(ServiceError) as caught:
                await wrong.generate(prompt, params)
            assert "UNAUTHENTICATED" in caught.value.message and "not-it" not in caught.value.message
        finally:
            await wrong.aclose()


async def test_no_tokens_configured_means_no_interceptor_and_open_calls() -> None:
    async with llm_server() as target, grpc.aio.insecure_channel(target) as channel:
        stub = llm_service_pb2_grpc.LlmServiceStub(channel)
        assert (await stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=5)).model_id == "echo"
