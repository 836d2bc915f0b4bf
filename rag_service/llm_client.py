"""Client of the LLM service: streaming generation, token counting, model info, with errors mapped."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import SecretStr

from llmtwin.llm.v1 import llm_service_pb2 as llm_pb
from llmtwin.llm.v1 import llm_service_pb2_grpc as llm_grpc
from rag_service.errors import DeadlineExceeded, InvalidArgument, LlmUnavailable, Overloaded, ServiceError
from servekit.auth import client_interceptors
from servekit.channels import client_channel
from servekit.errors import field_violations
from servekit.logs import request_id_var, trace_id_var
from servekit.tls import ClientTls

LLM_SERVICE = "llmtwin.llm.v1.LlmService"
# The LLM contract's limits on stop sequences (GenerationParameters.stop_sequences).
MAX_STOP_SEQUENCES = 8
MAX_STOP_LENGTH = 64
ROLES = {"system": llm_pb.ROLE_SYSTEM, "user": llm_pb.ROLE_USER, "assistant": llm_pb.ROLE_ASSISTANT}
# The format TwinLlama was fine-tuned on (the book's instruction dataset).
ALPACA = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the "
    "request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)


@dataclass(frozen=True, slots=True)
class Prompt:
    """What is sent to the model: chat messages (role, content), or a raw prompt in a trained format."""

    messages: tuple[tuple[str, str], ...] = ()
    text: str | None = None

    @classmethod
    def instruction(cls, system: str, user: str, style: str) -> Prompt:
        """An instruction in the prompt format the model was trained with (RAG_PROMPT_FORMAT): a system and a
        user message rendered by the model's chat template ("chat"), or one Alpaca instruction ("alpaca")."""
        if style == "alpaca":
            return cls(text=ALPACA.format(instruction=f"{system}\n\n{user}"))
        return cls(messages=(("system", system), ("user", user)))

    def to_request(self, parameters: llm_pb.GenerationParameters, request_id: str) -> llm_pb.GenerateRequest:
        """The LLM service's GenerateRequest for this prompt ("-", no request id, is sent as none)."""
        request_id = "" if request_id == "-" else request_id
        if self.text is not None:
            return llm_pb.GenerateRequest(prompt=self.text, parameters=parameters, request_id=request_id)
        turns = [llm_pb.ChatMessage(role=ROLES[r], content=c) for r, c in self.messages]
        return llm_pb.GenerateRequest(
            messages=llm_pb.ChatMessages(messages=turns), parameters=parameters, request_id=request_id
        )

    def count_request(self) -> llm_pb.CountTokensRequest:
        """The CountTokens request for this prompt."""
        if self.text is not None:
            return llm_pb.CountTokensRequest(prompt=self.text)
        turns = [llm_pb.ChatMessage(role=ROLES[r], content=c) for r, c in self.messages]
        return llm_pb.CountTokensRequest(messages=llm_pb.ChatMessages(messages=turns))


def call_metadata() -> tuple[tuple[str, str], ...]:
    """The request id and trace id of the request being served (context variables set by the RPC wrapper and
    the pipeline), sent with every call made on its behalf so the LLM service's logs join the answer's."""
    ids = [("x-request-id", request_id_var.get()), ("x-trace-id", trace_id_var.get())]
    return tuple((k, v) for k, v in ids if v and v != "-")


class LlmClient:
    """One channel to the LLM service, shared by every request; every call carries `call_metadata()`."""

    def __init__(self, target: str, *, tls: ClientTls | None = None, token: SecretStr | None = None):
        self.target = target
        # Round robin over every LLM replica the target resolves to, UNAVAILABLE retried before a stream starts.
        self._channel = client_channel(target, tls=tls, interceptors=client_interceptors(token))
        self._stub = llm_grpc.LlmServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._info: llm_pb.GetModelInfoResponse | None = None

    async def model_info(self, timeout: float | None = 5.0) -> llm_pb.GetModelInfoResponse:
        """The served model and its limits (cached after the first success)."""
        if self._info is None:
            request = llm_pb.GetModelInfoRequest()
            self._info = await self._call(self._stub.GetModelInfo(request, timeout=timeout, metadata=call_metadata()))
        return self._info

    @property
    def cached_info(self) -> llm_pb.GetModelInfoResponse | None:
        """The model info once a GetModelInfo call has succeeded, else None (never calls out)."""
        return self._info

    async def count_tokens(self, prompt: Prompt, timeout: float | None = 5.0) -> int:
        """Tokens the model sees for this prompt."""
        call = self._stub.CountTokens(prompt.count_request(), timeout=timeout, metadata=call_metadata())
        response = await self._call(call)
        return int(response.token_count)

    async def generate(
        self,
        prompt: Prompt,
        parameters: llm_pb.GenerationParameters,
        *,
        metadata: Sequence[tuple[str, str]] = (),
        timeout: float | None = None,
    ) -> llm_pb.GenerationResult:
        """A whole generation (for short internal steps: expansion, self-query)."""
        request = prompt.to_request(parameters, request_id_var.get())
        call = self._stub.Generate(request, metadata=[*call_metadata(), *metadata], timeout=timeout)
        return (await self._call(call)).result

    async def stream(
        self,
        prompt: Prompt,
        parameters: llm_pb.GenerationParameters,
        *,
        metadata: Sequence[tuple[str, str]] = (),
        timeout: float | None = None,
    ) -> AsyncGenerator[llm_pb.GenerateStreamResponse, None]:
        """Relays GenerateStream messages as they arrive; closing the iterator cancels the call."""
        request = prompt.to_request(parameters, request_id_var.get())
        call = self._stub.GenerateStream(request, metadata=[*call_metadata(), *metadata], timeout=timeout)
        try:
            async for message in call:
                yield message
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

    async def _call(self, call):  # type: ignore[no-untyped-def]
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
