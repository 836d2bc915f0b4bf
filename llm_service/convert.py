"""Protobuf ↔ domain conversion at the edge, with the validation of what clients send."""

from __future__ import annotations

from llm_service.errors import InvalidArgument
from llm_service.settings import Settings
from llm_service.types import (
    Completion,
    FinishReason,
    GenerationInput,
    Message,
    ModelInfo,
    Parameters,
    Request,
    Token,
)
from llmtwin.llm.v1 import llm_service_pb2 as pb
from servekit.limits import MAX_STOP_LENGTH, MAX_STOP_SEQUENCES, sampling_violations

_ROLES = {pb.ROLE_SYSTEM: "system", pb.ROLE_USER: "user", pb.ROLE_ASSISTANT: "assistant"}
_BACKENDS = {
    "embedded": pb.BACKEND_KIND_EMBEDDED,
    "tgi": pb.BACKEND_KIND_TGI,
    "sagemaker": pb.BACKEND_KIND_SAGEMAKER,
    "echo": pb.BACKEND_KIND_ECHO,
    "openai": pb.BACKEND_KIND_OPENAI,
}


def input_from_proto(message: pb.GenerateRequest | pb.CountTokensRequest) -> GenerationInput:
    """The prompt or chat messages of a request; raises InvalidArgument when missing or empty."""
    which = message.WhichOneof("input")
    if which == "prompt":
        if not message.prompt.strip():
            raise InvalidArgument({"prompt": "must not be empty"})
        return GenerationInput(prompt=message.prompt)
    if which == "messages":
        turns = message.messages.messages
        if not turns:
            raise InvalidArgument({"messages.messages": "must have at least one turn"})
        violations = []
        for i, turn in enumerate(turns):
            if turn.role not in _ROLES:
                violations.append((f"messages.messages[{i}].role", "must be ROLE_SYSTEM, ROLE_USER or ROLE_ASSISTANT"))
            if not turn.content.strip() and turn.role != pb.ROLE_ASSISTANT:
                violations.append((f"messages.messages[{i}].content", "must not be empty"))
        if violations:
            raise InvalidArgument(violations)
        return GenerationInput(messages=tuple(Message(_ROLES[t.role], t.content) for t in turns))
    raise InvalidArgument({"input": "set either prompt or messages"})


def parameters_from_proto(p: pb.GenerationParameters, settings: Settings, max_total_tokens: int) -> Parameters:
    """Validated parameters with defaults filled in; collects every violation before raising."""
    violations: list[tuple[str, str]] = []

    def check(ok: bool, name: str, rule: str) -> None:
        if not ok:
            violations.append((f"parameters.{name}", rule))

    max_new = p.max_new_tokens if p.HasField("max_new_tokens") else settings.default_max_new_tokens
    check(1 <= max_new <= max_total_tokens, "max_new_tokens", f"must be between 1 and {max_total_tokens}")
    temperature = p.temperature if p.HasField("temperature") else settings.default_temperature
    top_p = p.top_p if p.HasField("top_p") else 1.0
    top_k = p.top_k if p.HasField("top_k") else 0
    penalty = p.repetition_penalty if p.HasField("repetition_penalty") else 1.0
    frequency = p.frequency_penalty if p.HasField("frequency_penalty") else 0.0
    presence = p.presence_penalty if p.HasField("presence_penalty") else 0.0
    violations += sampling_violations(
        {
            "temperature": temperature,
            "top_p": top_p,
            "top_k": top_k,
            "repetition_penalty": penalty,
            "frequency_penalty": frequency,
            "presence_penalty": presence,
        }
    )
    check(len(p.stop_sequences) <= MAX_STOP_SEQUENCES, "stop_sequences", f"at most {MAX_STOP_SEQUENCES}")
    for i, stop in enumerate(p.stop_sequences):
        check(
            0 < len(stop) <= MAX_STOP_LENGTH,
            f"stop_sequences[{i}]",
            f"must have 1 to {MAX_STOP_LENGTH} characters",
        )
    if violations:
        raise InvalidArgument(violations)
    return Parameters(
        max_new_tokens=max_new,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        repetition_penalty=penalty,
        frequency_penalty=frequency,
        presence_penalty=presence,
        stop_sequences=tuple(p.stop_sequences),
        seed=p.seed if p.HasField("seed") else None,
        return_logprobs=p.return_logprobs,
    )


def request_from_proto(message: pb.GenerateRequest, settings: Settings, info: ModelInfo, request_id: str) -> Request:
    """A validated domain request."""
    return Request(
        input=input_from_proto(message),
        parameters=parameters_from_proto(message.parameters, settings, info.max_total_tokens),
        request_id=request_id,
        adapter=adapter_from_proto(message.adapter, info),
    )


def adapter_from_proto(adapter: str, info: ModelInfo) -> str:
    """The requested LoRA adapter ("" for the base model); InvalidArgument when the backend does not serve it."""
    if adapter and adapter not in info.adapters:
        served = ", ".join(info.adapters) if info.adapters else "none (only the base model)"
        raise InvalidArgument({"adapter": f"unknown adapter {adapter!r}; adapters served: {served}"})
    return adapter


def token_to_proto(token: Token, index: int) -> pb.GenerateStreamResponse:
    """A stream message carrying one token chunk."""
    # Hot path (once per token): one constructor call, optional fields passed only when present.
    return pb.GenerateStreamResponse(
        token=pb.TokenChunk(text=token.text, index=index, token_id=token.token_id, logprob=token.logprob)
    )


def result_to_proto(
    completion: Completion, *, ttft_s: float, total_s: float, queue_s: float, model_id: str, request_id: str
) -> pb.GenerationResult:
    """The final result of a generation."""
    return pb.GenerationResult(
        text=completion.text,
        finish_reason=_FINISH[completion.finish_reason],
        usage=pb.Usage(
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            total_tokens=completion.prompt_tokens + completion.completion_tokens,
        ),
        time_to_first_token_s=ttft_s,
        total_time_s=total_s,
        queue_time_s=queue_s,
        model_id=model_id,
        request_id=request_id,
    )


def model_info_to_proto(info: ModelInfo, max_concurrent: int) -> pb.GetModelInfoResponse:
    """GetModelInfo's answer."""
    return pb.GetModelInfoResponse(
        model_id=info.model_id,
        model_revision=info.model_revision,
        backend=_BACKENDS.get(info.backend, pb.BACKEND_KIND_UNSPECIFIED),
        max_input_tokens=info.max_input_tokens,
        max_total_tokens=info.max_total_tokens,
        max_concurrent_requests=max_concurrent,
        adapters=list(info.adapters),
    )


_FINISH = {
    FinishReason.UNSPECIFIED: pb.FINISH_REASON_UNSPECIFIED,
    FinishReason.LENGTH: pb.FINISH_REASON_LENGTH,
    FinishReason.STOP_SEQUENCE: pb.FINISH_REASON_STOP_SEQUENCE,
    FinishReason.END_OF_SEQUENCE: pb.FINISH_REASON_END_OF_SEQUENCE,
}
