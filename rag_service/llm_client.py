"""Client of the LLM service, and the translation layer to its contract (llmtwin.llm.v1): the pipeline gives
and gets domain types (rag_service.types); protobuf is built and read here only. Errors are mapped to ours."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Awaitable, Sequence
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import SecretStr

from llmtwin.llm.v1 import llm_service_pb2 as llm_pb
from llmtwin.llm.v1 import llm_service_pb2_grpc as llm_grpc
from rag_service.errors import DeadlineExceeded, InvalidArgument, LlmUnavailable, Overloaded, ServiceError
from rag_service.types import (
    BackendKind,
    FinishReason,
    Generation,
    GenerationParameters,
    ModelInfo,
    Prompt,
    Token,
    Usage,
)
from servekit.auth import client_interceptors
from servekit.channels import client_channel
from servekit.errors import field_violations
from servekit.logs import REQUEST_ID_KEY, TRACE_ID_KEY, request_id_var, trace_id_var
from servekit.tls import ClientTls

LLM_SERVICE = "llmtwin.llm.v1.LlmService"
R = TypeVar("R")
ROLES = {"system": llm_pb.ROLE_SYSTEM, "user": llm_pb.ROLE_USER, "assistant": llm_pb.ROLE_ASSISTANT}
_FINISH_FROM_PB = {
    llm_pb.FINISH_REASON_UNSPECIFIED: FinishReason.UNSPECIFIED,
    llm_pb.FINISH_REASON_LENGTH: FinishReason.LENGTH,
    llm_pb.FINISH_REASON_STOP_SEQUENCE: FinishReason.STOP_SEQUENCE,
    llm_pb.FINISH_REASON_END_OF_SEQUENCE: FinishReason.END_OF_SEQUENCE,
    llm_pb.FINISH_REASON_REPETITION: FinishReason.REPETITION,
}
_FINISH_TO_PB = {reason: number for number, reason in _FINISH_FROM_PB.items()}
_BACKENDS = {
    llm_pb.BACKEND_KIND_EMBEDDED: BackendKind.EMBEDDED,
    llm_pb.BACKEND_KIND_TGI: BackendKind.TGI,
    llm_pb.BACKEND_KIND_SAGEMAKER: BackendKind.SAGEMAKER,
    llm_pb.BACKEND_KIND_ECHO: BackendKind.ECHO,
    llm_pb.BACKEND_KIND_OPENAI: BackendKind.OPENAI,
}


def parameters_to_proto(parameters: GenerationParameters) -> llm_pb.GenerationParameters:
    """The contract's GenerationParameters; unset (None) fields stay unset."""
    return llm_pb.GenerationParameters(**parameters.given())


def _input(prompt: Prompt) -> dict[str, Any]:
    """The `input` oneof of a GenerateRequest or CountTokensRequest."""
    if prompt.text is not None:
        return {"prompt": prompt.text}
    turns = [llm_pb.ChatMessage(role=ROLES[r], content=c) for r, c in prompt.messages]
    return {"messages": llm_pb.ChatMessages(messages=turns)}


def generate_request(
    prompt: Prompt, parameters: llm_pb.GenerationParameters, adapter: str = ""
) -> llm_pb.GenerateRequest:
    """The LLM service's GenerateRequest for this prompt (with a LoRA adapter, or "": the base model). The request
    id is not in it: our calls carry it as x-request-id metadata (`call_metadata`), the one carrier between our
    services (docs/contracts.md)."""
    return llm_pb.GenerateRequest(**_input(prompt), parameters=parameters, adapter=adapter)


def finish_reason_to_proto(reason: FinishReason) -> llm_pb.FinishReason:
    """The contract's FinishReason value."""
    return _FINISH_TO_PB[reason]


def generation_from_proto(result: llm_pb.GenerationResult) -> Generation:
    """A generation's end as the pipeline sees it."""
    return Generation(
        text=result.text,
        finish_reason=_FINISH_FROM_PB.get(result.finish_reason, FinishReason.UNSPECIFIED),
        usage=Usage(result.usage.prompt_tokens, result.usage.completion_tokens),
        model_id=result.model_id,
        ttft_s=result.time_to_first_token_s,
    )


def model_info_from_proto(info: llm_pb.GetModelInfoResponse) -> ModelInfo:
    """The served model and its limits."""
    return ModelInfo(
        model_id=info.model_id,
        backend=_BACKENDS.get(info.backend, BackendKind.UNSPECIFIED),
        max_input_tokens=info.max_input_tokens,
        max_total_tokens=info.max_total_tokens,
        adapters=tuple(info.adapters),
    )


def call_metadata() -> tuple[tuple[str, str], ...]:
    """The request id and trace id of the request being served (context variables set by the RPC wrapper and
    the pipeline), sent with every call made on its behalf so the LLM service's logs join the answer's."""
    ids = [(REQUEST_ID_KEY, request_id_var.get()), (TRACE_ID_KEY, trace_id_var.get())]
    return tuple((k, v) for k, v in ids if v and v != "-")


INFO_TTL_S = 30.0  # how long GetModelInfo's answer is reused


class LlmClient:
    """One channel to the LLM service, shared by every request; every call carries `call_metadata()`."""

    def __init__(
        self,
        target: str,
        *,
        tls: ClientTls | None = None,
        token: SecretStr | None = None,
        info_ttl_s: float = INFO_TTL_S,
    ):
        self.target = target
        self._info_ttl_s = info_ttl_s
        self._info_at = 0.0
        # Round robin over every LLM replica the target resolves to, UNAVAILABLE retried before a stream starts.
        self._channel = client_channel(target, tls=tls, interceptors=client_interceptors(token))
        self._stub = llm_grpc.LlmServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._info: ModelInfo | None = None

    async def model_info(self, timeout: float | None = 5.0) -> ModelInfo:
        """The served model, its limits and adapters, cached for `info_ttl_s`: a rolling update of the LLM tier
        (a new model, limits or adapters) is seen within that time. A failed refresh keeps the last answer."""
        now = time.monotonic()
        if self._info is None or now - self._info_at >= self._info_ttl_s:
            request = llm_pb.GetModelInfoRequest()
            call = self._stub.GetModelInfo(request, timeout=timeout, metadata=call_metadata())
            try:
                self._info, self._info_at = model_info_from_proto(await self._call(call)), now
            except ServiceError:
                if self._info is None:
                    raise
        return self._info

    @property
    def cached_info(self) -> ModelInfo | None:
        """The model info once a GetModelInfo call has succeeded, else None (never calls out)."""
        return self._info

    async def count_tokens(self, prompt: Prompt, timeout: float | None = 5.0) -> int:
        """Tokens the model sees for this prompt."""
        request = llm_pb.CountTokensRequest(**_input(prompt))
        call = self._stub.CountTokens(request, timeout=timeout, metadata=call_metadata())
        response = await self._call(call)
        return int(response.token_count)

    async def generate(
        self,
        prompt: Prompt,
        parameters: GenerationParameters,
        *,
        metadata: Sequence[tuple[str, str]] = (),
        timeout: float | None = None,
    ) -> Generation:
        """A whole generation (for short internal steps: expansion, self-query)."""
        request = generate_request(prompt, parameters_to_proto(parameters))
        call = self._stub.Generate(request, metadata=[*call_metadata(), *metadata], timeout=timeout)
        return generation_from_proto((await self._call(call)).result)

    async def stream(
        self,
        prompt: Prompt,
        parameters: GenerationParameters,
        *,
        metadata: Sequence[tuple[str, str]] = (),
        timeout: float | None = None,
        adapter: str = "",
    ) -> AsyncGenerator[Token | Generation, None]:
        """Tokens as the LLM streams them, then its Generation; closing the iterator cancels the call. `adapter`:
        the LoRA adapter to generate with ("": the base model)."""
        request = generate_request(prompt, parameters_to_proto(parameters), adapter)
        call = self._stub.GenerateStream(request, metadata=[*call_metadata(), *metadata], timeout=timeout)
        try:
            async for message in call:
                if message.HasField("final"):
                    yield generation_from_proto(message.final)
                else:
                    yield Token(message.token.text)
        except grpc.aio.AioRpcError as exc:
            raise map_error(exc, self.target) from exc
        finally:
            call.cancel()  # no-op when finished; stops the generation when our caller went away

    async def check_health(self, timeout: float = 2.0) -> bool:
        """True when the LLM service reports itself SERVING."""
        try:
            response = await self._health.Check(health_pb2.HealthCheckRequest(service=LLM_SERVICE), timeout=timeout)
        except grpc.aio.AioRpcError:
            return False
        return response.status == health_pb2.HealthCheckResponse.SERVING

    async def _call(self, call: Awaitable[R]) -> R:
        try:
            return await call
        except grpc.aio.AioRpcError as exc:
            raise map_error(exc, self.target) from exc

    async def aclose(self) -> None:
        """Closes the channel."""
        await self._channel.close()


def map_error(exc: grpc.aio.AioRpcError, target: str) -> ServiceError:
    """The RAG service's error for an LLM service failure."""
    code = exc.code()
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        violations = field_violations(exc) or [("parameters", exc.details() or "rejected by the LLM service")]
        return InvalidArgument(violations)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return Overloaded(f"the LLM service is busy: {exc.details()}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded("the deadline passed while the LLM service was generating")
    if code == grpc.StatusCode.UNAVAILABLE:
        return LlmUnavailable(f"the LLM service at {target} is unavailable: {exc.details()}")
    return ServiceError(f"the LLM service failed: {code.name}: {exc.details()}", reason="LLM_ERROR")
