"""The vector store failing under a running RAG service: callers get UNAVAILABLE with a reason, the
service keeps serving, and it recovers without a restart."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llm_service.backends.echo import EchoBackend
from llmtwin.rag.v1 import rag_service_pb2 as pb
from rag_service.types import Kind
from servekit.errors import error_reason
from tests.support.llm import running_llm
from tests.support.procs import free_port
from tests.support.rag import corpus, running_rag

pytestmark = pytest.mark.asyncio(loop_scope="session")

QUESTION = pb.RetrieveRequest(query="How do you serve a model with low latency?")


async def test_an_unreachable_qdrant_server_is_unavailable_and_the_service_keeps_answering(embedder):
    closed = f"http://127.0.0.1:{free_port()}"
    async with (
        running_llm(EchoBackend()) as llm,
        running_rag(llm.target, embedder, qdrant_url=closed) as rag,
    ):
        for _ in range(2):  # the first failure does not break the service
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await rag.stub.Retrieve(QUESTION, timeout=20)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert error_reason(err.value) == "STORE_UNAVAILABLE"
            assert "vector store" in (err.value.details() or "")

        with pytest.raises(grpc.aio.AioRpcError) as streamed:
            [m async for m in rag.stub.AnswerStream(pb.AnswerRequest(query=QUESTION.query), timeout=20)]
        assert streamed.value.code() == grpc.StatusCode.UNAVAILABLE

        health = health_pb2_grpc.HealthStub(rag.channel)
        check = await health.Check(health_pb2.HealthCheckRequest(service="llmtwin.rag.v1.RagService"))
        assert check.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_a_collection_deleted_under_the_service_is_unavailable_until_ingestion_recreates_it(embedder):
    async with running_llm(EchoBackend()) as llm, running_rag(llm.target, embedder) as rag:
        docs = [d for d in corpus() if d.kind == pb.CONTENT_KIND_ARTICLE][:3]
        await rag.ingest(docs)
        store = rag.server.rag.store  # type: ignore[union-attr]
        await store._run(store._client.delete_collection(store._name(Kind.ARTICLE)))

        with pytest.raises(grpc.aio.AioRpcError) as err:
            await rag.stub.Retrieve(QUESTION, timeout=20)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert error_reason(err.value) == "STORE_UNAVAILABLE"
        assert "missing" in (err.value.details() or "")

        await rag.ingest(docs)  # re-creates the collection
        context = (await rag.stub.Retrieve(QUESTION, timeout=20)).context
        assert {d.document_id for d in context.documents} <= {d.id for d in docs}
        assert context.documents
