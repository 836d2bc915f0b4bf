"""What the answer is built from and what it reports, over real gRPC: grouped and evidenced sources, compressed
context, citations, decoding defaults, and questions about people who are not authors in the store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from llm_service.backends.echo import EchoBackend
from llm_service.types import Completion, FinishReason, Request, Token
from llmtwin.llm.v1 import llm_service_pb2 as llm_pb
from llmtwin.rag.v1 import rag_service_pb2 as pb
from rag_service import convert
from rag_service.ingestor import Ingestor
from rag_service.pipeline.self_query import SYSTEM as SELF_QUERY_SYSTEM
from tests.support.llm import running_llm
from tests.support.rag import corpus, running_rag

pytestmark = pytest.mark.asyncio(loop_scope="session")

# Two authors, every kind, a few documents each: enough to group and compress, quick to ingest.
DOCUMENTS = [d for d in corpus() if d.author_id in ("elena-varga", "tomas-okafor") and d.id[-3:] <= "004"]


class ScriptedBackend(EchoBackend):
    """Answers self-query prompts with `name` and every other prompt with `answer`; records the requests."""

    def __init__(self, answer: str = "Fine.", name: str = "NONE", kind: str = "echo") -> None:
        super().__init__()
        self.answer, self.name = answer, name
        self.requests: list[Request] = []
        self._info = replace(self._info, backend=kind)  # which backend it says it is

    async def generate(self, request: Request) -> AsyncIterator[Token | Completion]:  # type: ignore[override]
        """The scripted text, one word per token."""
        messages = request.input.messages or ()
        self_query = bool(messages) and messages[0].content == SELF_QUERY_SYSTEM
        if not self_query:
            self.requests.append(request)
        text = self.name if self_query else self.answer
        words = [w + " " for w in text.split()]
        for i, word in enumerate(words):
            yield Token(word, token_id=i)
        yield Completion(FinishReason.END_OF_SEQUENCE, 10, len(words), "".join(words))


async def answer(rag, query: str, **parameters: object) -> tuple[pb.AnswerContext, str, pb.AnswerFinal]:
    request = pb.AnswerRequest(query=query, parameters=llm_pb.GenerationParameters(**parameters))
    events = [m async for m in rag.stub.AnswerStream(request, timeout=30)]
    text = "".join(m.delta.text for m in events if m.WhichOneof("event") == "delta")
    return events[0].context, text, events[-1].final


async def test_sources_group_the_context_by_document_with_evidence_and_the_answer_cites_them(embedder):
    backend = ScriptedBackend("Continuous batching raised throughput [1]. The cache helped too [2][7].")
    async with running_llm(backend) as llm, running_rag(llm.target, embedder) as rag:
        await rag.ingest(DOCUMENTS)
        context, text, final = await answer(rag, "What does Elena Varga think about batching?", max_new_tokens=64)

    sources = context.sources
    assert [s.number for s in sources] == list(range(1, len(sources) + 1))
    # One source per document, in the order of each document's best chunk.
    assert [s.document_id for s in sources] == list(dict.fromkeys(d.document_id for d in context.documents))
    by_id = {d.id: d for d in DOCUMENTS}
    for source in sources:
        chunks = [d for d in context.documents if d.document_id == source.document_id]
        assert [(c.chunk_index, c.score) for c in source.chunks] == [(c.chunk_index, c.score) for c in chunks]
        assert source.score == chunks[0].score and source.title == by_id[source.document_id].title
        assert (source.author_full_name, source.kind) == ("Elena Varga", chunks[0].kind)
        evidence = source.evidence.split(" … ")[0]
        assert evidence and evidence in " ".join(by_id[source.document_id].content.split())
    # The prompt numbers its context blocks as the sources are numbered.
    user = (backend.requests[-1].input.messages or ())[-1].content
    blocks = user.split(":\n", 1)[1].split("\n\nQuestion: ")[0].split("\n\n[")
    assert [int(block.lstrip("[").split("]")[0]) for block in blocks] == [s.number for s in sources]
    # Citations: the markers that point at a source, in order, once; [7] points nowhere and is dropped.
    assert text.strip() == final.answer.strip()
    assert [(c.number, c.document_id, c.title, c.link) for c in final.citations] == [
        (s.number, s.document_id, s.title, s.link) for s in sources[:2]
    ]


async def test_the_context_is_compressed_to_the_sentences_closest_to_the_question(embedder):
    backend = ScriptedBackend()
    async with running_llm(backend) as llm, running_rag(llm.target, embedder, context_tokens=80) as rag:
        await rag.ingest(DOCUMENTS)
        context, _, final = await answer(rag, "What throughput did Elena measure with continuous batching?")
        _, _, whole = await answer(rag, "What throughput did Elena measure with continuous batching?")

    user = (backend.requests[0].input.messages or ())[-1].content
    blocks = user.split(":\n", 1)[1].split("\n\nQuestion: ")[0]
    kept = [line.split("] ", 1)[-1] for line in blocks.splitlines() if line]
    assert 0 < sum(len(line) for line in kept) <= 80 * 4 + 4 * len(kept)  # the budget, in estimated tokens
    chunks = " ".join(" ".join(d.content.split()) for d in context.documents)
    for line in kept:  # only whole sentences of the retrieved chunks, in document order
        assert all(piece.strip() in chunks for piece in line.split(" … "))
    assert "compress" in [t.step for t in final.timings]
    assert final.usage.prompt_tokens == whole.usage.prompt_tokens  # same question, same prompt


@pytest.mark.parametrize(("kind", "budget"), [("embedded", 40), ("tgi", 400), ("sagemaker", 400)])
async def test_the_context_budget_follows_the_llm_backend(embedder, kind: str, budget: int):
    backend = ScriptedBackend(kind=kind)
    budgets = {"context_tokens_embedded": 40, "context_tokens_remote": 400}
    async with running_llm(backend) as llm, running_rag(llm.target, embedder, **budgets) as rag:
        await rag.ingest(DOCUMENTS)
        await answer(rag, "What throughput did Elena measure with continuous batching?")
    user = (backend.requests[0].input.messages or ())[-1].content
    context = user.split(":\n", 1)[1].split("\n\nQuestion: ")[0]
    assert budget * 4 * 0.5 < len(context) <= budget * 4 + 40  # estimated tokens: ~4 characters each


async def test_unset_decoding_parameters_take_the_service_defaults_and_explicit_ones_win(embedder):
    backend = ScriptedBackend()
    defaults = {
        "default_repetition_penalty": 1.25,
        "default_frequency_penalty": 0.4,
        "default_presence_penalty": 0.2,
        "default_max_new_tokens": 120,
        "default_temperature": 0.1,
    }
    async with running_llm(backend) as llm, running_rag(llm.target, embedder, **defaults) as rag:
        await rag.ingest(DOCUMENTS[:3])
        await answer(rag, "What is batching?")
        await answer(rag, "What is batching?", repetition_penalty=1.0, frequency_penalty=0.0, max_new_tokens=9)
        stops = [f"stop{i}" for i in range(8)]
        await answer(rag, "What is batching?", stop_sequences=["END"])
        await answer(rag, "What is batching?", stop_sequences=stops)
    p, q, one, full = (r.parameters for r in backend.requests)
    # The prompt's own next label ends an answer, after the caller's stops and within the contract's 8.
    assert (p.stop_sequences, one.stop_sequences, full.stop_sequences) == (
        ("Question:",),
        ("END", "Question:"),
        tuple(stops),
    )
    assert (p.repetition_penalty, p.frequency_penalty, p.presence_penalty) == pytest.approx((1.25, 0.4, 0.2))
    assert (p.max_new_tokens, p.temperature) == (120, pytest.approx(0.1))
    assert (q.repetition_penalty, q.frequency_penalty, q.presence_penalty, q.max_new_tokens) == (
        1.0,
        0.0,
        pytest.approx(0.2),
        9,
    )


async def test_a_question_about_someone_who_is_not_an_author_is_declined_without_a_generation(embedder):
    backend = ScriptedBackend()
    async with running_llm(backend) as llm, running_rag(llm.target, embedder) as rag:
        await rag.ingest(DOCUMENTS)
        context, text, final = await answer(rag, "What does Marcus Feldmann think about speculative decoding?")
        assert backend.requests == []  # the model was never asked to speak for him
        assert (
            text
            == final.answer
            == (
                "I don't know what Marcus Feldmann thinks: I can only answer from the writing of Elena Varga and "
                "Tomás Okafor."
            )
        )
        assert not context.sources and not context.documents and not final.citations
        assert final.finish_reason == llm_pb.FINISH_REASON_END_OF_SEQUENCE

        _, text, _ = await answer(rag, "What does Elena Vargas think about speculative decoding?")  # misspelt
        assert text.strip() == "Fine." and len(backend.requests) == 1
        _, text, _ = await answer(rag, "How does Qdrant Edge store payload indexes?")  # a product, not a person
        assert text.strip() == "Fine." and len(backend.requests) == 2


async def test_an_author_written_behind_this_replicas_back_is_found_not_declined(embedder):
    """Another replica (or direct ingestion) adds an author after this replica cached the author list."""
    backend = ScriptedBackend()
    elena = [d for d in DOCUMENTS if d.author_id == "elena-varga"]
    tomas = [convert.document_from_proto(d)[0] for d in DOCUMENTS if d.author_id == "tomas-okafor"]
    async with running_llm(backend) as llm, running_rag(llm.target, embedder) as rag:
        await rag.ingest(elena)
        await answer(rag, "What does Elena Varga think about batching?")  # caches [Elena Varga]
        await Ingestor(rag.server.rag.store, embedder).ingest(tomas)  # not through this replica

        context, text, _ = await answer(rag, "What does Tomás Okafor think about change streams?")
        assert text.strip() == "Fine." and context.author.full_name == "Tomás Okafor"
        assert {d.author_id for d in context.documents} == {"tomas-okafor"}
        retrieved = await rag.stub.Retrieve(
            pb.RetrieveRequest(query="change streams", options=pb.RetrievalOptions(author="Tomás Okafor"))
        )
        assert retrieved.context.author.id == "tomas-okafor"  # an explicit author is checked against the store
