"""One twin per author: the RAG service answers about a mapped author with that author's LoRA adapter
(RAG_AUTHOR_ADAPTERS), found by self-query or options.author, and the trace records which adapter answered.
Real RAG and LLM services over gRPC; the echo backend advertises the adapters and records each request's."""

from __future__ import annotations

import pytest

from llm_service.backends.echo import EchoBackend
from llmtwin.llm.v1 import llm_service_pb2 as llm_pb
from llmtwin.rag.v1 import rag_service_pb2 as pb
from rag_service.tracing import Tracer, TraceRecorder
from tests.support.llm import running_llm
from tests.support.rag import corpus, running_rag

pytestmark = pytest.mark.asyncio(loop_scope="session")

SUBSET = [d for d in corpus() if d.id.endswith(("-001", "-002"))]
PARAMETERS = llm_pb.GenerationParameters(max_new_tokens=4)


class RecordingTracer(Tracer):
    """Samples every answer and keeps the finished traces."""

    def __init__(self) -> None:
        self.traces: list[TraceRecorder] = []

    def should_sample(self) -> bool:
        """Always."""
        return True

    def submit(self, recorder: TraceRecorder) -> None:
        """Keep it."""
        self.traces.append(recorder)

    def close(self) -> None:
        """Nothing to flush."""


async def test_an_answer_about_a_mapped_author_goes_to_that_authors_adapter(embedder) -> None:
    backend = EchoBackend(adapters=("elena", "jonas"))
    tracer = RecordingTracer()
    mapping = "elena-varga=elena,jonas-lindqvist=jonas,priya-raman=priya"  # priya: not served by the LLM service
    async with (
        running_llm(backend) as llm,
        running_rag(llm.target, embedder, tracer, author_adapters=mapping, expand_queries=0) as rag,
    ):
        await rag.ingest(SUBSET)
        backend.adapters_used.clear()
        asked = [
            ("What does Elena Varga say about batching requests?", None),  # self-query
            ("How is the LoRA rank chosen?", pb.RetrievalOptions(author="jonas-lindqvist")),  # options.author
            ("What did Tomás Okafor learn about change streams?", None),  # no mapping: the base model
            ("What does Priya Raman monitor?", None),  # mapped, but the LLM service does not serve it
            ("What is retrieval-augmented generation?", pb.RetrievalOptions(self_query=False)),  # no author
        ]
        for query, options in asked:
            response = await rag.stub.Answer(pb.AnswerRequest(query=query, options=options, parameters=PARAMETERS))
            assert response.final.answer
    answers = backend.adapters_used[-len(asked) :]  # self-query calls (base model) come before each answer
    assert answers == ["elena", "jonas", "", "", ""]
    assert [t.query for t in tracer.traces] == [q for q, _ in asked]
    records = [t.finish() for t in tracer.traces]
    assert [r.metadata["adapter"] for r in records] == ["elena", "jonas", None, None, None]
    generate_spans = [next(s for s in r.spans if s.name == "generate") for r in records]
    assert [(s.metadata or {})["adapter"] for s in generate_spans] == ["elena", "jonas", None, None, None]


async def test_without_a_mapping_every_answer_uses_the_base_model(embedder) -> None:
    backend = EchoBackend(adapters=("elena",))
    async with running_llm(backend) as llm, running_rag(llm.target, embedder) as rag:
        await rag.ingest(SUBSET)
        request = pb.AnswerRequest(query="What does Elena Varga say about batching requests?", parameters=PARAMETERS)
        await rag.stub.Answer(request)
    assert set(backend.adapters_used) == {""}
