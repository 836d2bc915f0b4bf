"""An AnswerStream call opened up to its first message, so that early failures are plain HTTP errors."""

from __future__ import annotations

import grpc
from starlette.requests import Request

from gateway.deps import rpc_metadata
from gateway.disconnect import until_disconnected
from llmtwin.rag.v1 import rag_service_pb2 as rag_pb2
from llmtwin.rag.v1 import rag_service_pb2_grpc


class AnswerStream:
    """Async iterator over the messages of a started AnswerStream call; cancel() stops it upstream."""

    def __init__(self, call: grpc.aio.UnaryStreamCall, first: rag_pb2.AnswerStreamResponse | None) -> None:
        self._call = call
        self._first = first

    def __aiter__(self) -> AnswerStream:
        return self

    async def __anext__(self) -> rag_pb2.AnswerStreamResponse:
        if self._first is not None:
            message, self._first = self._first, None
            return message
        message = await self._call.read()
        if message is grpc.aio.EOF:
            raise StopAsyncIteration
        return message

    def cancel(self) -> None:
        """Cancel the call (a no-op once it has ended); the RAG service then stops the generation."""
        self._call.cancel()


async def open_answer_stream(
    stub: rag_service_pb2_grpc.RagServiceStub,
    request: rag_pb2.AnswerRequest,
    *,
    http: Request,
    request_id: str,
    deadline_s: float,
) -> AnswerStream:
    """Start AnswerStream and wait for its first message; a failure before it raises the AioRpcError, and a client
    that disconnects meanwhile cancels the call (ClientDisconnected)."""
    call = stub.AnswerStream(request, metadata=rpc_metadata(request_id), timeout=deadline_s)
    try:
        first = await until_disconnected(http, call, call.read())
    except BaseException:
        call.cancel()
        raise
    return AnswerStream(call, None if first is grpc.aio.EOF else first)
