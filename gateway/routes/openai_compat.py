"""OpenAI-compatible API: POST /v1/chat/completions (streaming or not) and GET /v1/models.

The last user message is the RAG query; earlier turns and system messages are not used. Retrieval
options can ride along as the non-standard `options` field (`extra_body={"options": {...}}`), and the
sources the answer cites come back as the non-standard top-level `citations` field of the completion (or of
the streamed chunk with the finish_reason); SDKs that do not know these fields ignore them.
Errors keep the gateway's HTTP statuses, written in OpenAI's error shape.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from functools import partial
from typing import Any

import grpc
from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.background import BackgroundTask

from gateway.deps import MetricsDep, SettingsDep, Stub, adopt_request_id, rpc_metadata
from gateway.errors import ApiError, from_rpc_error, from_validation_error
from gateway.metrics import Metrics
from gateway.models import (
    AnswerRequest,
    Float32,
    GenerationParameters,
    RetrievalOptions,
    Text,
    UInt32,
    UInt64,
    answer_request_to_proto,
    encodable,
)
from gateway.streaming import AnswerStream, open_answer_stream
from llmtwin.llm.v1 import llm_service_pb2 as llm_pb2
from llmtwin.rag.v1 import rag_service_pb2 as rag_pb2

# Compact JSON: every delta is one event, and bytes per token add up.
_json = partial(json.dumps, separators=(",", ":"))

_ERROR_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


class _OpenAIErrors(APIRoute):
    """Route class writing validation and gRPC errors in OpenAI's shape (statuses as everywhere else)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """The route's handler, wrapped so its errors come out OpenAI-shaped."""
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                return openai_error(from_validation_error(exc))
            except grpc.aio.AioRpcError as exc:
                return openai_error(from_rpc_error(exc))

        return handle


router = APIRouter(tags=["openai"], route_class=_OpenAIErrors)


def _encodable_text(value: Any) -> Any:
    # Checked after the union is resolved, so that errors name the field ("messages.0.content").
    if isinstance(value, str):
        return encodable(value)
    if isinstance(value, list):
        for item in value:
            if isinstance(item, str):
                encodable(item)
    return value


class ContentPart(BaseModel):
    """One part of a message's content; only text parts are read."""

    model_config = ConfigDict(extra="ignore")
    type: str = "text"
    text: Text = ""


class ChatMessage(BaseModel):
    """One chat turn."""

    model_config = ConfigDict(extra="ignore")
    role: str
    content: str | list[ContentPart] | None = None

    @field_validator("content")
    @classmethod
    def _encodable_content(cls, value: Any) -> Any:
        return _encodable_text(value)

    def text(self) -> str:
        """The message's text, text parts joined."""
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content if part.type == "text")
        return self.content or ""


class StreamOptions(BaseModel):
    """OpenAI stream options."""

    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The fields of an OpenAI chat-completions request that map onto the RAG contract; others are ignored."""

    model_config = ConfigDict(extra="ignore")
    model: str = ""
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: Float32 | None = None
    top_p: Float32 | None = None
    frequency_penalty: Float32 | None = None
    presence_penalty: Float32 | None = None
    max_tokens: UInt32 | None = None
    max_completion_tokens: UInt32 | None = None
    stop: str | list[str] | None = None
    seed: UInt64 | None = None
    options: RetrievalOptions = Field(default_factory=RetrievalOptions)

    @field_validator("stop")
    @classmethod
    def _encodable_stop(cls, value: Any) -> Any:
        return _encodable_text(value)

    def to_answer_request(self) -> AnswerRequest:
        """The RAG question: the last user message, with the sampling parameters translated."""
        query = next((m.text() for m in reversed(self.messages) if m.role == "user"), "")
        stop = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        parameters = GenerationParameters(
            max_new_tokens=self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            frequency_penalty=self.frequency_penalty,
            presence_penalty=self.presence_penalty,
            stop_sequences=stop,
            seed=self.seed,
        )
        return AnswerRequest(query=query, options=self.options, parameters=parameters)


@router.get("/v1/models")
async def list_models(settings: SettingsDep) -> dict[str, Any]:
    """The one model this gateway serves."""
    model = {"id": settings.model_name, "object": "model", "created": 0, "owned_by": "llm-twin"}
    return {"object": "list", "data": [model]}


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest, request: Request, stub: Stub, settings: SettingsDep, metrics: MetricsDep
) -> Response:
    """Answer the last user message, as an OpenAI chat completion or a stream of completion chunks."""
    request_id = adopt_request_id(request)
    rag_request = answer_request_to_proto(body.to_answer_request(), request_id)
    base = {"id": f"chatcmpl-{request_id}", "created": int(time.time()), "model": settings.model_name}
    if body.stream:
        stream = await open_answer_stream(
            stub, rag_request, request_id=request_id, deadline_s=settings.request_timeout_s
        )
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        chunks = _chunks(stream, base, include_usage, metrics)
        return EventSourceResponse(chunks, sep="\n", background=BackgroundTask(stream.cancel))
    response = await stub.Answer(rag_request, metadata=rpc_metadata(request_id), timeout=settings.request_timeout_s)
    message = {"role": "assistant", "content": response.final.answer}
    choice = {"index": 0, "message": message, "finish_reason": _finish_reason(response.final.finish_reason)}
    completion = {
        **base,
        "object": "chat.completion",
        "choices": [choice],
        "usage": _usage(response.final.usage),
        "citations": _citations(response.final),
    }
    return JSONResponse(completion)


def openai_error(error: ApiError) -> JSONResponse:
    """An error response in OpenAI's shape, with the gateway's status code."""
    return JSONResponse(_openai_error_body(error), status_code=error.code)


def _openai_error_body(error: ApiError) -> dict[str, Any]:
    kind = _ERROR_TYPES.get(error.code, "invalid_request_error" if error.code < 500 else "api_error")
    param = error.field_violations[0][0] if error.field_violations else None
    return {"error": {"message": error.message, "type": kind, "code": error.reason or error.status, "param": param}}


async def _chunks(
    stream: AnswerStream, base: dict[str, Any], include_usage: bool, metrics: Metrics
) -> AsyncIterator[ServerSentEvent]:
    base = {**base, "object": "chat.completion.chunk"}
    if include_usage:
        base["usage"] = None  # OpenAI sends usage only on the extra last chunk.

    def chunk(delta: dict[str, str], finish_reason: str | None = None, **extra: Any) -> ServerSentEvent:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        return ServerSentEvent(_json({**base, "choices": [choice], **extra}))

    metrics.streams_in_flight.inc()
    try:
        yield chunk({"role": "assistant", "content": ""})
        final: llm_pb2.Usage | None = None
        async for message in stream:
            kind = message.WhichOneof("event")
            if kind == "delta" and message.delta.text:
                yield chunk({"content": message.delta.text})
            elif kind == "final":
                final = message.final.usage
                yield chunk({}, _finish_reason(message.final.finish_reason), citations=_citations(message.final))
        if final is None:
            error = ApiError(502, "INTERNAL", "the RAG stream ended without a final event", "STREAM_TRUNCATED")
            yield ServerSentEvent(_json(_openai_error_body(error)))
            return
        if include_usage:
            yield ServerSentEvent(_json({**base, "choices": [], "usage": _usage(final)}))
        yield ServerSentEvent("[DONE]")
    except grpc.aio.AioRpcError as exc:
        # After the stream started the status is sent already: OpenAI clients read an `error` chunk.
        yield ServerSentEvent(_json(_openai_error_body(from_rpc_error(exc))))
    finally:
        stream.cancel()
        metrics.streams_in_flight.dec()


def _finish_reason(reason: int) -> str:
    return "length" if reason == llm_pb2.FINISH_REASON_LENGTH else "stop"


def _citations(final: rag_pb2.AnswerFinal) -> list[dict[str, Any]]:
    return [
        {"number": c.number, "document_id": c.document_id, "title": c.title, "link": c.link} for c in final.citations
    ]


def _usage(usage: llm_pb2.Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
