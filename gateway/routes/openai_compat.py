"""OpenAI-compatible API: POST /v1/chat/completions (streaming or not) and GET /v1/models.

The last user message is the RAG query and the whole messages list before it is the conversation
(`AnswerRequest.history`), mapped by this policy:

- earlier user messages become user turns, earlier assistant messages assistant turns (text parts joined; an
  assistant message without text, e.g. only tool calls, is left out, and so are tool and function messages and
  anything after the last user message); an assistant message longer than GATEWAY_MAX_QUERY_CHARS keeps its start;
- every system and developer message (wherever it stands) is joined, blank-line separated, into the one system
  turn, an extra instruction added to the twin's own, cut to its first 1000 characters (RAG_MAX_INSTRUCTION_CHARS);
- of the rest, the most recent turns that fit GATEWAY_MAX_HISTORY_TURNS and GATEWAY_MAX_HISTORY_CHARS are sent
  (older ones are left out, as a chat keeps to its context window): a long chat is never refused for its length.

The non-standard `conversation_id` field groups a chat's answers (one thread in the traces). Retrieval
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
from typing import Annotated, Any, ClassVar, Literal

import grpc
from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator
from pydantic.json_schema import JsonDict
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException

from gateway.deps import MetricsDep, SettingsDep, Stub, adopt_request_id, rpc_metadata, with_body
from gateway.disconnect import until_disconnected
from gateway.errors import OPENAI_ERROR_RESPONSES, ApiError, from_http_status, from_rpc_error, from_validation_error
from gateway.metrics import Metrics
from gateway.models import (
    CONVERSATION_ID_PATTERN,
    DEFAULT_MAX_HISTORY_CHARS,
    DEFAULT_MAX_HISTORY_TURNS,
    DEFAULT_MAX_QUERY_CHARS,
    MAX_INSTRUCTION_CHARS,
    MAX_STOP_SEQUENCES,
    NOT_BLANK_PATTERN,
    AnswerRequest,
    ConversationTurn,
    DialogueTurn,
    GenerationParameters,
    JsonSafeUInt,
    MaxNewTokens,
    Penalty,
    Query,
    RetrievalOptions,
    StopSequence,
    SystemTurn,
    Temperature,
    Text,
    TopP,
    answer_request_to_proto,
    encodable,
    fit_history,
    query_type,
)
from gateway.streaming import AnswerStream, open_answer_stream
from llmtwin.llm.v1 import llm_service_pb2 as llm_pb2
from llmtwin.rag.v1 import rag_service_pb2 as rag_pb2

# Compact JSON: every delta is one event, and bytes per token add up.
_json = partial(json.dumps, separators=(",", ":"))


def _user_parts(max_chars: int) -> Any:
    # In the schema: some part holds text that is not whitespace; the joined length is stated in words only.
    schema: JsonDict = {
        "contains": {"type": "object", "properties": {"text": {"type": "string", "pattern": NOT_BLANK_PATTERN}}},
        "description": f"Text parts, joined as the question: 1 to {max_chars} characters together, not blank.",
    }
    return Annotated[list[TextPart], Field(min_length=1, json_schema_extra=schema)]


_A_USER_MESSAGE: JsonDict = {"type": "object", "properties": {"role": {"const": "user"}}, "required": ["role"]}

_CHAT_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"application/json": {}, "text/event-stream": {}},
        "description": "A chat.completion, or with stream=true chat.completion.chunk events ending with [DONE]",
    }
}

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
            except HTTPException as exc:  # a body that is not JSON text (400)
                return openai_error(from_http_status(exc.status_code, str(exc.detail)))

        return handle


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
    """One part of a non-user message's content; such messages are not read."""

    model_config = ConfigDict(extra="ignore", strict=True)
    type: str = "text"
    text: Text = ""


class TextPart(BaseModel):
    """One text part of a user message's content (the only kind the gateway reads)."""

    model_config = ConfigDict(extra="ignore", strict=True)
    type: Literal["text"]
    text: Text


class UserMessage(BaseModel):
    """A user turn: its text (the string, or the text parts joined) is a question, with a question's rules."""

    model_config = ConfigDict(extra="ignore", strict=True)
    max_query_chars: ClassVar[int] = DEFAULT_MAX_QUERY_CHARS
    role: Literal["user"]
    content: Query | _user_parts(DEFAULT_MAX_QUERY_CHARS)  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _a_question(self) -> UserMessage:
        text = self.text()
        if not text.strip():
            raise ValueError("content must not be blank")
        if len(text) > self.max_query_chars:
            raise ValueError(f"content must have at most {self.max_query_chars} characters")
        return self

    def text(self) -> str:
        """The message's text, text parts joined."""
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content


class OtherMessage(BaseModel):
    """A system, developer, assistant or tool turn: system and developer text is the extra instruction, assistant text
    an earlier answer; tool turns are not used."""

    model_config = ConfigDict(extra="ignore", strict=True)
    role: Literal["system", "developer", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None

    @field_validator("content")
    @classmethod
    def _encodable_content(cls, value: Any) -> Any:
        return _encodable_text(value)

    def text(self) -> str:
        """The message's text, text parts joined ("" without content)."""
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content if part.type == "text")
        return self.content or ""


class StreamOptions(BaseModel):
    """OpenAI stream options."""

    model_config = ConfigDict(extra="ignore", strict=True)
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The fields of an OpenAI chat-completions request that map onto the RAG contract; others are ignored."""

    model_config = ConfigDict(extra="ignore", strict=True)
    model: str = ""
    messages: list[Annotated[UserMessage | OtherMessage, Field(discriminator="role")]] = Field(
        min_length=1,
        description="The last user message is the question (there must be one); the messages before it are the "
        "conversation: user and assistant turns, system and developer messages joined as an extra instruction.",
        json_schema_extra={"contains": _A_USER_MESSAGE},
    )
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = Field(default=None, description="In (0, 1].")
    frequency_penalty: Penalty | None = None
    presence_penalty: Penalty | None = None
    max_tokens: MaxNewTokens | None = None
    max_completion_tokens: MaxNewTokens | None = None
    stop: StopSequence | Annotated[list[StopSequence], Field(max_length=MAX_STOP_SEQUENCES)] | None = None
    seed: JsonSafeUInt | None = Field(default=None, description="0 to 2^53 - 1 (exact in JSON).")
    options: RetrievalOptions = Field(default_factory=RetrievalOptions)
    conversation_id: str = Field(
        default="",
        pattern=CONVERSATION_ID_PATTERN,
        description="Non-standard: groups a chat's answers (at most 128 printable ASCII characters).",
    )

    @field_validator("messages")
    @classmethod
    def _has_a_question(cls, value: list[UserMessage | OtherMessage]) -> list[UserMessage | OtherMessage]:
        if not any(isinstance(m, UserMessage) for m in value):
            raise ValueError("must contain a user message (the question)")
        return value

    def to_answer_request(
        self,
        max_query_chars: int = DEFAULT_MAX_QUERY_CHARS,
        max_history_turns: int = DEFAULT_MAX_HISTORY_TURNS,
        max_history_chars: int = DEFAULT_MAX_HISTORY_CHARS,
    ) -> AnswerRequest:
        """The RAG question: the last user message, the messages before it as the history (the module's policy),
        with the sampling parameters translated."""
        last = max(i for i, m in enumerate(self.messages) if isinstance(m, UserMessage))
        query = self.messages[last].text()  # type: ignore[union-attr]
        history: list[ConversationTurn] = []
        for message in self.messages[:last]:
            text = message.text()
            if message.role in ("user", "assistant") and text.strip():
                history.append(DialogueTurn.model_construct(role=message.role, content=text[:max_query_chars]))
        instruction = "\n\n".join(
            text
            for m in self.messages
            if isinstance(m, OtherMessage) and m.role in ("system", "developer") and (text := m.text()).strip()
        )[:MAX_INSTRUCTION_CHARS]
        if instruction.strip():
            history.insert(0, SystemTurn.model_construct(role="system", content=instruction))
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
        # Validated already (as a user message's text), so not again against the default limit.
        return AnswerRequest.model_construct(
            query=query,
            options=self.options,
            parameters=parameters,
            request_id="",
            history=fit_history(history, max_history_turns, max_history_chars),
            conversation_id=self.conversation_id,
        )


def chat_request_model(max_query_chars: int) -> type[ChatCompletionRequest]:
    """ChatCompletionRequest with this limit on a user message's text (the gateway's query limit)."""
    if max_query_chars == DEFAULT_MAX_QUERY_CHARS:
        return ChatCompletionRequest
    user = create_model(
        "UserMessage",
        __base__=UserMessage,
        content=(query_type(max_query_chars) | _user_parts(max_query_chars), ...),
    )
    user.max_query_chars = max_query_chars
    messages = list[Annotated[user | OtherMessage, Field(discriminator="role")]]  # type: ignore[valid-type]
    field = Field(min_length=1, json_schema_extra={"contains": _A_USER_MESSAGE})
    return create_model("ChatCompletionRequest", __base__=ChatCompletionRequest, messages=(messages, field))


def build_router(max_query_chars: int) -> APIRouter:
    """The OpenAI-compatible routes, with requests validated for this query length limit."""
    router = APIRouter(tags=["openai"], route_class=_OpenAIErrors)
    router.add_api_route("/v1/models", list_models, methods=["GET"])
    router.add_api_route(
        "/v1/chat/completions",
        with_body(chat_completions, chat_request_model(max_query_chars)),
        methods=["POST"],
        response_model=None,
        responses=_CHAT_DOC | OPENAI_ERROR_RESPONSES,
    )
    return router


async def list_models(settings: SettingsDep) -> dict[str, Any]:
    """The one model this gateway serves."""
    model = {"id": settings.model_name, "object": "model", "created": 0, "owned_by": "llm-twin"}
    return {"object": "list", "data": [model]}


async def chat_completions(
    body: ChatCompletionRequest, request: Request, stub: Stub, settings: SettingsDep, metrics: MetricsDep
) -> Response:
    """Answer the last user message, the messages before it as the conversation, as an OpenAI chat completion or a
    stream of completion chunks."""
    request_id = adopt_request_id(request)
    question = body.to_answer_request(settings.max_query_chars, settings.max_history_turns, settings.max_history_chars)
    rag_request = answer_request_to_proto(question, settings.max_history_chars)
    base = {"id": f"chatcmpl-{request_id}", "created": int(time.time()), "model": settings.model_name}
    if body.stream:
        stream = await open_answer_stream(
            stub, rag_request, http=request, request_id=request_id, deadline_s=settings.request_timeout_s
        )
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        chunks = _chunks(stream, base, include_usage, metrics)
        return EventSourceResponse(chunks, sep="\n", background=BackgroundTask(stream.cancel))
    call = stub.Answer(rag_request, metadata=rpc_metadata(request_id), timeout=settings.request_timeout_s)
    response = await until_disconnected(request, call, call)
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
