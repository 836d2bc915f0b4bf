"""The LLM service over real gRPC on loopback: streaming, validation, limits, cancellation, ids, health."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llm_service.backends.echo import EchoBackend
from llmtwin.llm.v1 import llm_service_pb2 as pb
from servekit.errors import error_reason, field_violations
from tests.support.llm import running_llm, stopped_producing

USER = pb.ROLE_USER


def chat(text: str) -> pb.ChatMessages:
    return pb.ChatMessages(messages=[pb.ChatMessage(role=USER, content=text)])


async def test_embedded_model_streams_tokens_then_one_final_message():
    async with running_llm() as llm:
        call = llm.stub.GenerateStream(
            pb.GenerateRequest(
                messages=chat("Write a long story about a dragon."),
                parameters=pb.GenerationParameters(max_new_tokens=12, temperature=0),
            )
        )
        events = [m async for m in call]
        tokens = [m.token for m in events[:-1]]
        final = events[-1].final
        assert all(m.HasField("token") for m in events[:-1]) and events[-1].HasField("final")
        assert [t.index for t in tokens] == list(range(len(tokens)))
        assert final.text == "".join(t.text for t in tokens)
        assert final.usage.prompt_tokens > 5
        assert final.usage.total_tokens == final.usage.prompt_tokens + final.usage.completion_tokens
        if final.usage.completion_tokens == 12:  # greedy and a long story: the limit, unless the model ends first
            assert final.finish_reason == pb.FINISH_REASON_LENGTH
        else:
            assert final.finish_reason == pb.FINISH_REASON_END_OF_SEQUENCE and final.usage.completion_tokens < 12
        assert 0 < final.time_to_first_token_s <= final.total_time_s
        assert final.model_id == "HuggingFaceTB/SmolLM2-135M-Instruct"


async def test_embedded_repetition_controls_reach_llama_cpp():
    """Greedy decoding of a prompt that invites a loop: each control changes what llama.cpp picks."""

    async def words(parameters: pb.GenerationParameters, **settings: object) -> list[str]:
        async with running_llm(**settings) as llm:
            prompt = "Repeat after me: the cat sat on the mat, the cat sat on the mat, the cat sat on the mat,"
            parameters.MergeFrom(pb.GenerationParameters(max_new_tokens=40, temperature=0))
            result = (await llm.stub.Generate(pb.GenerateRequest(prompt=prompt, parameters=parameters))).result
            return result.text.split()

    plain = await words(pb.GenerationParameters())
    assert len(set(plain)) < len(plain) / 2  # it loops
    for penalised in (
        await words(pb.GenerationParameters(repetition_penalty=1.5)),
        await words(pb.GenerationParameters(frequency_penalty=1.5)),
        await words(pb.GenerationParameters(presence_penalty=1.5)),
        await words(pb.GenerationParameters(), dry_multiplier=2.0),  # a service setting: DRY sampling
    ):
        assert penalised != plain and len(set(penalised)) / len(penalised) > len(set(plain)) / len(plain)


async def test_embedded_usage_is_counted_when_a_stop_sequence_ends_the_generation():
    async with running_llm() as llm:
        text = "Count: one, two, three, four, five, six, seven, eight"
        params = pb.GenerationParameters(max_new_tokens=40, temperature=0, stop_sequences=["four"])
        result = (await llm.stub.Generate(pb.GenerateRequest(prompt=text, parameters=params))).result
        assert result.finish_reason == pb.FINISH_REASON_STOP_SEQUENCE and "four" not in result.text
        count = await llm.stub.CountTokens(pb.CountTokensRequest(prompt=text))
        assert result.usage.prompt_tokens == count.token_count
        assert 0 < result.usage.completion_tokens < 40


async def test_embedded_unary_generate_counts_tokens_and_describes_the_model():
    async with running_llm() as llm:
        params = pb.GenerationParameters(max_new_tokens=8, temperature=0, seed=1, return_logprobs=True)
        result = (
            await llm.stub.Generate(pb.GenerateRequest(prompt="The capital of France is", parameters=params))
        ).result
        assert result.usage.completion_tokens <= 8 and result.text
        count = await llm.stub.CountTokens(pb.CountTokensRequest(prompt="The capital of France is"))
        assert count.token_count == result.usage.prompt_tokens
        info = await llm.stub.GetModelInfo(pb.GetModelInfoRequest())
        assert info.backend == pb.BACKEND_KIND_EMBEDDED
        assert info.max_total_tokens == 2048 and info.max_input_tokens == 1536
        assert count.max_input_tokens == info.max_input_tokens
        stream = llm.stub.GenerateStream(pb.GenerateRequest(prompt="The capital of France is", parameters=params))
        first = await stream.read()
        assert first.token.HasField("logprob") and first.token.HasField("token_id")
        stream.cancel()


async def test_greedy_generation_is_deterministic():
    async with running_llm() as llm:
        params = pb.GenerationParameters(max_new_tokens=10, temperature=0)
        a = await llm.stub.Generate(pb.GenerateRequest(prompt="Once upon a time", parameters=params))
        b = await llm.stub.Generate(pb.GenerateRequest(prompt="Once upon a time", parameters=params))
        assert a.result.text == b.result.text


async def test_stop_sequence_ends_generation_and_is_not_included():
    async with running_llm(EchoBackend()) as llm:
        params = pb.GenerationParameters(max_new_tokens=50, stop_sequences=["gamma"])
        result = (
            await llm.stub.Generate(pb.GenerateRequest(prompt="alpha beta gamma delta", parameters=params))
        ).result
        assert result.text == "alpha beta "
        assert result.finish_reason == pb.FINISH_REASON_STOP_SEQUENCE


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.GenerateRequest(prompt="hi", parameters=pb.GenerationParameters(max_new_tokens=0)), "max_new_tokens"),
        (pb.GenerateRequest(prompt="hi", parameters=pb.GenerationParameters(max_new_tokens=10**9)), "max_new_tokens"),
        (pb.GenerateRequest(prompt="hi", parameters=pb.GenerationParameters(temperature=2.5)), "temperature"),
        (pb.GenerateRequest(prompt="hi", parameters=pb.GenerationParameters(temperature=float("nan"))), "temperature"),
        (pb.GenerateRequest(prompt="hi", parameters=pb.GenerationParameters(top_p=0)), "top_p"),
        (pb.GenerateRequest(prompt="hi", parameters=pb.GenerationParameters(top_k=5000)), "top_k"),
        (pb.GenerateRequest(prompt="hi", parameters=pb.GenerationParameters(repetition_penalty=-1)), "repetition"),
        (pb.GenerateRequest(prompt="hi", parameters=pb.GenerationParameters(stop_sequences=[""])), "stop_sequences"),
        (pb.GenerateRequest(prompt="   "), "prompt"),
        (pb.GenerateRequest(), "input"),
        (pb.GenerateRequest(messages=pb.ChatMessages()), "messages"),
        (pb.GenerateRequest(messages=pb.ChatMessages(messages=[pb.ChatMessage(content="x")])), "role"),
        (pb.GenerateRequest(prompt="word " * 3000), "prompt"),
        (pb.GenerateRequest(prompt="word " * 1500, parameters=pb.GenerationParameters(max_new_tokens=1000)), "max_new"),
    ],
)
async def test_bad_requests_get_invalid_argument_with_field_violations(request_, field):
    async with running_llm(EchoBackend()) as llm:
        for call in (llm.stub.Generate(request_), llm.stub.GenerateStream(request_)):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call if isinstance(call, grpc.aio.UnaryUnaryCall) else [m async for m in call]
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert error_reason(err.value) == "INVALID_ARGUMENT"
            assert any(field in f for f, _ in field_violations(err.value)), field_violations(err.value)
        # the service keeps serving
        ok = await llm.stub.Generate(pb.GenerateRequest(prompt="still here"))
        assert ok.result.text


async def test_embedded_rejects_a_prompt_over_the_model_limit():
    async with running_llm() as llm:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await llm.stub.Generate(pb.GenerateRequest(prompt="hello " * 2000))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "input limit of 1536" in err.value.details()


async def test_client_cancel_stops_the_backend_promptly():
    backend = EchoBackend(token_delay_s=0.005)
    async with running_llm(backend) as llm:
        call = llm.stub.GenerateStream(
            pb.GenerateRequest(prompt="a b c", parameters=pb.GenerationParameters(max_new_tokens=2000))
        )
        for _ in range(5):
            await call.read()
        call.cancel()
        assert await stopped_producing(backend, llm.server.admission) < 400  # of 2000, 5 ms apart


async def test_embedded_cancel_frees_the_slot_for_the_next_request():
    async with running_llm(max_concurrent=1, max_queued=0) as llm:
        call = llm.stub.GenerateStream(
            pb.GenerateRequest(prompt="Write a long story.", parameters=pb.GenerationParameters(max_new_tokens=1000))
        )
        await call.read()
        call.cancel()
        start = time.perf_counter()
        while llm.server.admission.in_flight:
            await asyncio.sleep(0.01)
        assert time.perf_counter() - start < 3  # at the next token: generous, CI machines are shared
        assert (
            await llm.stub.Generate(
                pb.GenerateRequest(prompt="Hi", parameters=pb.GenerationParameters(max_new_tokens=2))
            )
        ).result


async def test_deadline_stops_generation_and_reports_deadline_exceeded():
    backend = EchoBackend(token_delay_s=0.01)
    async with running_llm(backend) as llm:
        request = pb.GenerateRequest(prompt="a b", parameters=pb.GenerationParameters(max_new_tokens=1000))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await llm.stub.Generate(request, timeout=0.2)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert await stopped_producing(backend, llm.server.admission) < 200  # of 1000, 10 ms apart


async def test_requests_beyond_the_admission_limit_are_refused_at_once():
    async with running_llm(EchoBackend(token_delay_s=0.01), max_concurrent=1, max_queued=1, queue_timeout_s=0.3) as llm:
        long = pb.GenerateRequest(prompt="a", parameters=pb.GenerationParameters(max_new_tokens=200))
        first = llm.stub.GenerateStream(long)
        await first.read()
        queued = asyncio.ensure_future(llm.stub.Generate(long))
        await asyncio.sleep(0.05)
        start = time.perf_counter()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await llm.stub.Generate(long)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert time.perf_counter() - start < 0.25  # refused at once, not after the 0.3 s queue timeout
        with pytest.raises(grpc.aio.AioRpcError) as waited:
            await queued  # queued behind a 2 s stream, it gives up after queue_timeout_s
        assert waited.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        first.cancel()


async def test_request_id_comes_from_the_field_or_metadata_and_is_returned():
    async with running_llm(EchoBackend()) as llm:
        call = llm.stub.Generate(pb.GenerateRequest(prompt="x", request_id="req-field"))
        assert (await call).result.request_id == "req-field"
        assert ("x-request-id", "req-field") in tuple(await call.trailing_metadata())
        call = llm.stub.Generate(pb.GenerateRequest(prompt="x"), metadata=(("x-request-id", "req-meta"),))
        assert (await call).result.request_id == "req-meta"
        generated = (await llm.stub.Generate(pb.GenerateRequest(prompt="x"))).result.request_id
        assert len(generated) == 32


async def test_health_is_not_serving_until_loaded_and_while_shutting_down():
    class SlowStart(EchoBackend):
        loaded = asyncio.Event()

        async def start(self) -> None:
            await self.loaded.wait()

    backend = SlowStart(token_delay_s=0.01)
    from llm_service.server import LlmServer
    from llm_service.settings import Settings

    server = LlmServer(
        Settings(port=0, metrics_port=0, health_interval_s=0.05, shutdown_grace_s=2, shutdown_drain_s=0.3), backend
    )
    starting = asyncio.ensure_future(server.start())
    while not server.app.port:
        await asyncio.sleep(0.01)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.app.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)

        async def status(service: str) -> int:
            return (await health.Check(health_pb2.HealthCheckRequest(service=service))).status

        assert await status("") == health_pb2.HealthCheckResponse.SERVING
        assert await status("llmtwin.llm.v1.LlmService") == health_pb2.HealthCheckResponse.NOT_SERVING
        backend.loaded.set()
        await starting
        await asyncio.sleep(0.1)
        assert await status("llmtwin.llm.v1.LlmService") == health_pb2.HealthCheckResponse.SERVING

        # graceful shutdown: NOT_SERVING, the in-flight stream completes
        from llmtwin.llm.v1 import llm_service_pb2_grpc

        stub = llm_service_pb2_grpc.LlmServiceStub(channel)
        stream = stub.GenerateStream(
            pb.GenerateRequest(prompt="a", parameters=pb.GenerationParameters(max_new_tokens=40))
        )
        await stream.read()
        stopping = asyncio.ensure_future(server.stop())
        await asyncio.sleep(0.05)
        assert await status("llmtwin.llm.v1.LlmService") == health_pb2.HealthCheckResponse.NOT_SERVING
        while (last := await stream.read()) is not grpc.aio.EOF:
            final = last
        assert final.HasField("final") and final.final.usage.completion_tokens == 40
        await stopping
