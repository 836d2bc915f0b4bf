"""gRPC layer of the LLM service: protobuf in, domain calls, protobuf out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

import grpc

from llm_service import convert, metrics
from llm_service.errors import DOMAIN
from llm_service.generation import Finished, Generator
from llm_service.settings import Settings
from llmtwin.llm.v1 import llm_service_pb2 as pb
from llmtwin.llm.v1 import llm_service_pb2_grpc as pb_grpc
from servekit.logs import request_id_var
from servekit.rpc import RpcKit

rpc = RpcKit(DOMAIN, metrics.REQUESTS)


class LlmServicer(pb_grpc.LlmServiceServicer):
    """Implements llmtwin.llm.v1.LlmService over a Generator."""

    def __init__(self, generator: Generator, settings: Settings):
        self._gen = generator
        self._settings = settings

    def _request(self, message: pb.GenerateRequest):  # type: ignore[no-untyped-def]
        info = self._gen.backend.info()
        return convert.request_from_proto(message, self._settings, info, request_id_var.get())

    def _final(self, done: Finished) -> pb.GenerationResult:
        return convert.result_to_proto(
            done.completion,
            ttft_s=done.ttft_s,
            total_s=done.total_s,
            queue_s=done.queue_s,
            model_id=self._gen.backend.info().model_id,
            request_id=request_id_var.get(),
        )

    @rpc.stream
    async def GenerateStream(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateStreamResponse]:
        """Streams tokens, then the final result."""
        index = 0
        async with aclosing(self._gen.stream(self._request(request))) as events:
            async for event in events:
                if isinstance(event, Finished):
                    yield pb.GenerateStreamResponse(final=self._final(event))
                else:
                    yield convert.token_to_proto(event, index)
                    index += 1

    @rpc.unary
    async def Generate(self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext) -> pb.GenerateResponse:
        """Runs the generation to completion."""
        async with aclosing(self._gen.stream(self._request(request))) as events:
            async for event in events:
                if isinstance(event, Finished):
                    return pb.GenerateResponse(result=self._final(event))
        raise AssertionError("generation ended without a final result")

    @rpc.unary
    async def CountTokens(
        self, request: pb.CountTokensRequest, context: grpc.aio.ServicerContext
    ) -> pb.CountTokensResponse:
        """Counts the tokens the model sees for an input."""
        n = await self._gen.backend.count_tokens(convert.input_from_proto(request))
        return pb.CountTokensResponse(token_count=n, max_input_tokens=self._gen.backend.info().max_input_tokens)

    @rpc.unary
    async def GetModelInfo(
        self, request: pb.GetModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetModelInfoResponse:
        """Describes the served model."""
        return convert.model_info_to_proto(self._gen.backend.info(), self._gen.admission.max_concurrent)
