"""gRPC layer of the RAG service: protobuf in, pipeline calls, protobuf out."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator

import grpc

from llmtwin.rag.v1 import rag_service_pb2 as pb
from llmtwin.rag.v1 import rag_service_pb2_grpc as pb_grpc
from rag_service import convert, metrics
from rag_service.errors import DOMAIN
from rag_service.feedback import make_feedback
from rag_service.generation import Delta, Final
from rag_service.ingestor import Ingestor
from rag_service.rag import Rag, Retrieval
from rag_service.tracing import NoopTracer
from rag_service.types import Document
from servekit.admission import Admission
from servekit.logs import request_id_var
from servekit.rpc import RpcKit

rpc = RpcKit(DOMAIN, metrics.REQUESTS)


class RagServicer(pb_grpc.RagServiceServicer):
    """Implements llmtwin.rag.v1.RagService over the Rag pipeline."""

    def __init__(self, rag: Rag, ingestor: Ingestor, admission: Admission):
        self._rag = rag
        self._ingestor = ingestor
        self._admission = admission

    async def _events(
        self, request: pb.AnswerRequest, context: grpc.aio.ServicerContext
    ) -> AsyncGenerator[Retrieval | Delta | Final, None]:
        query, options = convert.query_and_options(request.query, request.options, self._rag.settings)
        parameters = convert.parameters_from_proto(request.parameters)
        conversation = convert.conversation_from_proto(request.history, request.conversation_id, self._rag.settings)
        async with self._admission.slot():
            events = self._rag.answer(
                query, options, parameters, request_id_var.get(), context.time_remaining(), conversation
            )
            try:
                async for event in events:
                    yield event
            finally:
                await events.aclose()  # a cancelled answer cancels its generation

    @rpc.stream
    async def AnswerStream(
        self, request: pb.AnswerRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.AnswerStreamResponse]:
        """Context first, then answer deltas as the LLM produces them, then the final event."""
        async for event in self._events(request, context):
            if isinstance(event, Delta):
                yield pb.AnswerStreamResponse(delta=pb.AnswerDelta(text=event.text))
            elif isinstance(event, Retrieval):
                yield pb.AnswerStreamResponse(context=convert.context_to_proto(event))
            else:
                yield pb.AnswerStreamResponse(final=convert.final_to_proto(event))

    @rpc.unary
    async def Answer(self, request: pb.AnswerRequest, context: grpc.aio.ServicerContext) -> pb.AnswerResponse:
        """The whole answer in one message."""
        response = pb.AnswerResponse()
        async for event in self._events(request, context):
            if isinstance(event, Retrieval):
                response.context.CopyFrom(convert.context_to_proto(event))
            elif isinstance(event, Final):
                response.final.CopyFrom(convert.final_to_proto(event))
        return response

    @rpc.unary
    async def Retrieve(self, request: pb.RetrieveRequest, context: grpc.aio.ServicerContext) -> pb.RetrieveResponse:
        """The ranked context only."""
        query, options = convert.query_and_options(request.query, request.options, self._rag.settings)
        async with self._admission.slot():
            rec = NoopTracer().start_trace(request_id_var.get(), query)
            retrieval = await self._rag.retrieve(query, options, rec, compress=False)
        return pb.RetrieveResponse(
            context=convert.context_to_proto(retrieval), timings=convert.timings_to_proto(retrieval.timings)
        )

    @rpc.unary
    async def SubmitFeedback(
        self, request: pb.SubmitFeedbackRequest, context: grpc.aio.ServicerContext
    ) -> pb.SubmitFeedbackResponse:
        """A reader's rating of an answer, queued as a feedback score on its trace; never waits on Opik."""
        self._rag.tracer.submit_feedback(make_feedback(request.trace_id, request.rating, request.comment))
        return pb.SubmitFeedbackResponse()

    @rpc.unary
    async def IngestDocuments(
        self, request_iterator: AsyncIterator[pb.IngestDocumentsRequest], context: grpc.aio.ServicerContext
    ) -> pb.IngestDocumentsResponse:
        """Chunks, embeds and upserts the streamed documents; invalid ones are reported and skipped."""
        rejected: list[pb.RejectedDocument] = []
        positions: list[int] = []  # stream position of each document handed to the ingestor

        async def documents() -> AsyncIterator[Document]:
            index = 0
            async for message in request_iterator:
                document, problem = convert.document_from_proto(message.document)
                if document is None:
                    rejected.append(pb.RejectedDocument(index=index, document_id=message.document.id, reason=problem))
                else:
                    positions.append(index)
                    yield document
                index += 1

        report = await self._ingestor.ingest(documents())
        self._rag.forget_authors()
        metrics.INGESTED_CHUNKS.inc(report.chunks_written)
        rejected += [pb.RejectedDocument(index=positions[i], document_id=d, reason=r) for i, d, r in report.rejected]
        rejected.sort(key=lambda r: r.index)
        return pb.IngestDocumentsResponse(
            documents_written=report.documents_written, chunks_written=report.chunks_written, rejected=rejected
        )
