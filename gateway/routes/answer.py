"""POST /v1/answer (one JSON answer) and POST /v1/answer/stream (server-sent events); a follow-up question carries
the conversation so far (`history`, `conversation_id`)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import grpc
from fastapi import APIRouter, Request
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.background import BackgroundTask

from gateway.deps import MetricsDep, SettingsDep, Stub, adopt_request_id, rpc_metadata, with_body
from gateway.disconnect import until_disconnected
from gateway.errors import ERROR_RESPONSES, ApiError, from_rpc_error
from gateway.metrics import Metrics
from gateway.models import (
    DEFAULT_MAX_HISTORY_TURNS,
    AnswerRequest,
    AnswerResponse,
    answer_from_proto,
    answer_request_model,
    answer_request_to_proto,
    context_from_proto,
    final_from_proto,
)
from gateway.streaming import AnswerStream, open_answer_stream

# Compact JSON: every delta is one event, and bytes per token add up.
_json = partial(json.dumps, separators=(",", ":"))

_SSE_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"text/event-stream": {}},
        "description": "context (documents and numbered sources), delta..., done (with citations), or error",
    }
}


def build_router(max_query_chars: int, max_history_turns: int = DEFAULT_MAX_HISTORY_TURNS) -> APIRouter:
    """The answer routes, with requests validated for these limits on the question and the history."""
    model = answer_request_model(max_query_chars, max_history_turns)
    router = APIRouter(tags=["answer"])
    router.add_api_route("/v1/answer", with_body(answer, model), methods=["POST"], responses=ERROR_RESPONSES)
    router.add_api_route(
        "/v1/answer/stream",
        with_body(answer_stream, model),
        methods=["POST"],
        response_class=EventSourceResponse,
        responses=_SSE_DOC | ERROR_RESPONSES,
    )
    return router


async def answer(body: AnswerRequest, request: Request, stub: Stub, settings: SettingsDep) -> AnswerResponse:
    """Answer a question in one response: the retrieved context (with its sources) and the final answer (with its
    citations)."""
    request_id = adopt_request_id(request, body.request_id)
    call = stub.Answer(
        answer_request_to_proto(body, settings.max_history_chars),
        metadata=rpc_metadata(request_id),
        timeout=settings.request_timeout_s,
    )
    return answer_from_proto(await until_disconnected(request, call, call))


async def answer_stream(
    body: AnswerRequest, request: Request, stub: Stub, settings: SettingsDep, metrics: MetricsDep
) -> EventSourceResponse:
    """Stream an answer as server-sent events: `context`, then `delta`s, then `done`; `error` if it fails."""
    request_id = adopt_request_id(request, body.request_id)
    stream = await open_answer_stream(
        stub,
        answer_request_to_proto(body, settings.max_history_chars),
        http=request,
        request_id=request_id,
        deadline_s=settings.request_timeout_s,
    )
    # The background task cancels the call even if the body never started (client gone at once).
    return EventSourceResponse(_events(stream, metrics), sep="\n", background=BackgroundTask(stream.cancel))


async def _events(stream: AnswerStream, metrics: Metrics) -> AsyncIterator[ServerSentEvent]:
    metrics.streams_in_flight.inc()
    try:
        finished = False
        async for message in stream:
            kind = message.WhichOneof("event")
            if kind == "context":
                yield ServerSentEvent(context_from_proto(message.context).model_dump_json(), event="context")
            elif kind == "delta":
                yield ServerSentEvent(_json({"text": message.delta.text}), event="delta")
            elif kind == "final":
                finished = True
                yield ServerSentEvent(final_from_proto(message.final).model_dump_json(), event="done")
        if not finished:
            error = ApiError(502, "INTERNAL", "the RAG stream ended without a final event", "STREAM_TRUNCATED")
            yield ServerSentEvent(_json(error.body()), event="error")
    except grpc.aio.AioRpcError as exc:
        yield ServerSentEvent(_json(from_rpc_error(exc).body()), event="error")
    finally:
        # Runs on normal end, on error and when the client disconnects (sse-starlette cancels us).
        stream.cancel()
        metrics.streams_in_flight.dec()
