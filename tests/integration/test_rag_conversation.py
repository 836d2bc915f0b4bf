"""Conversations over real gRPC: a follow-up is searched as a standalone question, the author named in an
earlier turn still filters it, and a malformed history is refused naming its turn (echo LLM, real store)."""

from __future__ import annotations

import grpc
import pytest
import pytest_asyncio

from llm_service.backends.echo import EchoBackend
from llmtwin.llm.v1 import llm_service_pb2 as llm_pb
from llmtwin.rag.v1 import rag_service_pb2 as pb
from servekit.errors import field_violations
from tests.support.llm import running_llm
from tests.support.rag import corpus, running_rag

pytestmark = pytest.mark.asyncio(loop_scope="session")

SUBSET = [d for d in corpus() if d.id.endswith(("-001", "-002", "-003"))]
PARAMETERS = llm_pb.GenerationParameters(max_new_tokens=8)


def turn(role: int, content: str) -> pb.ConversationTurn:
    return pb.ConversationTurn(role=role, content=content)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(embedder):
    """An LLM service (echo backend) and a RAG service with SUBSET ingested."""
    async with running_llm(EchoBackend()) as llm, running_rag(llm.target, embedder) as rag:
        await rag.ingest(SUBSET)
        yield rag


async def test_a_follow_up_is_searched_standalone_and_filtered_on_the_author_named_earlier(stack):
    history = [
        turn(pb.TURN_ROLE_SYSTEM, "Answer in one sentence."),
        turn(pb.TURN_ROLE_USER, "What did Tomás Okafor write about MongoDB change streams?"),
        turn(pb.TURN_ROLE_ASSISTANT, "I stream MongoDB changes into Qdrant [1]."),
    ]
    request = pb.AnswerRequest(
        query="How did he resume after a crash?", history=history, conversation_id="conv-1", parameters=PARAMETERS
    )
    events = [m async for m in stack.stub.AnswerStream(request)]
    context, final = events[0].context, events[-1].final
    assert context.author.id == "tomas-okafor"
    assert context.standalone_query.startswith("How did he resume after a crash? (")
    assert "MongoDB" in context.standalone_query and context.expanded_queries[0] == context.standalone_query
    assert "condense" in [t.step for t in final.timings]
    alone = await stack.stub.Answer(pb.AnswerRequest(query="How did he resume after a crash?", parameters=PARAMETERS))
    assert alone.context.standalone_query == "How did he resume after a crash?"
    assert not alone.context.HasField("author")
    assert final.usage.prompt_tokens > alone.final.usage.prompt_tokens  # the earlier turns are in the prompt


@pytest.mark.parametrize(
    ("history", "conversation_id", "field"),
    [
        ([turn(pb.TURN_ROLE_USER, "a"), turn(pb.TURN_ROLE_ASSISTANT, "")], "", "history[1].content"),
        ([turn(pb.TURN_ROLE_USER, "a"), turn(pb.TURN_ROLE_UNSPECIFIED, "b")], "", "history[1].role"),
        ([turn(pb.TURN_ROLE_SYSTEM, "a"), turn(pb.TURN_ROLE_SYSTEM, "b")], "", "history[1].role"),
        ([turn(pb.TURN_ROLE_USER, "q")] * 33, "", "history[32]"),
        ([turn(pb.TURN_ROLE_USER, "x" * 9000), turn(pb.TURN_ROLE_USER, "y" * 9000)], "", "history[1].content"),
        ([turn(pb.TURN_ROLE_SYSTEM, "x" * 1001)], "", "history[0].content"),
        ([], "x" * 129, "conversation_id"),
    ],
    ids=["empty", "no-role", "two-system", "turns", "chars", "instruction", "conversation-id"],
)
async def test_a_malformed_history_is_refused_naming_its_turn(stack, history, conversation_id, field):
    request = pb.AnswerRequest(query="And then?", history=history, conversation_id=conversation_id)
    for call in (stack.stub.Answer(request), stack.stub.AnswerStream(request)):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call if isinstance(call, grpc.aio.UnaryUnaryCall) else [m async for m in call]
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in [f for f, _ in field_violations(err.value)]
