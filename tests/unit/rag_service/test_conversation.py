"""Conversations: validation of the history at the edge, the standalone query of a follow-up, the prompt's
earlier turns within the token budget, and the conversation on the trace (Opik's thread)."""

from __future__ import annotations

from typing import Any

import pytest

from llmtwin.rag.v1 import rag_service_pb2 as pb
from rag_service.conversation import HISTORY_TRACE_CHARS, HISTORY_TRACE_TURNS, Conversation, Role, Turn
from rag_service.convert import conversation_from_proto
from rag_service.errors import InvalidArgument
from rag_service.pipeline.condense import is_follow_up, lexical_standalone, parse_rewrite, rewrite_prompt
from rag_service.pipeline.prompt import SYSTEM, fit_prompt, render
from rag_service.pipeline.sources import group_by_document
from rag_service.settings import Settings
from rag_service.types import Chunk, Kind, Prompt, ScoredChunk

USER, ASSISTANT, SYSTEM_ROLE = pb.TURN_ROLE_USER, pb.TURN_ROLE_ASSISTANT, pb.TURN_ROLE_SYSTEM
SETTINGS = Settings(metrics_port=0, max_history_turns=4, max_history_chars=100, max_instruction_chars=30)


def turns(*pairs: tuple[Any, str]) -> list[pb.ConversationTurn]:
    return [pb.ConversationTurn(role=r, content=c) for r, c in pairs]


def violations(history: list[pb.ConversationTurn], conversation_id: str = "") -> dict[str, str]:
    with pytest.raises(InvalidArgument) as caught:
        conversation_from_proto(history, conversation_id, SETTINGS)
    return dict(caught.value.violations)


# --- validation ---------------------------------------------------------------------------------------------


def test_a_valid_history_becomes_a_conversation_with_its_instruction_apart() -> None:
    history = turns((SYSTEM_ROLE, "Answer in French."), (USER, "Who is Elena?"), (ASSISTANT, " A writer. "))
    conversation = conversation_from_proto(history, "conv-1", SETTINGS)
    assert conversation.conversation_id == "conv-1"
    assert conversation.instruction == "Answer in French."
    assert conversation.dialogue == (Turn(Role.USER, "Who is Elena?"), Turn(Role.ASSISTANT, "A writer."))
    assert conversation.questions == ["Who is Elena?"]
    assert conversation_from_proto([], "", SETTINGS) == Conversation()


@pytest.mark.parametrize(
    ("history", "field"),
    [
        (turns((USER, "a"), (ASSISTANT, "  ")), "history[1].content"),
        (turns((USER, "a"), (0, "b")), "history[1].role"),
        (turns((USER, "a"), (7, "b")), "history[1].role"),
        (turns((SYSTEM_ROLE, "x"), (USER, "a"), (SYSTEM_ROLE, "y")), "history[2].role"),
        (turns((SYSTEM_ROLE, "x" * 31)), "history[0].content"),
        (turns(*[(USER, "q")] * 5), "history[4]"),
        (turns((USER, "a" * 60), (ASSISTANT, "b" * 30), (USER, "c" * 20)), "history[2].content"),
    ],
    ids=["empty", "unspecified-role", "unknown-role", "two-system-turns", "long-instruction", "turns", "chars"],
)
def test_a_malformed_or_oversized_history_names_the_turn(history: list[pb.ConversationTurn], field: str) -> None:
    assert field in violations(history)


def test_a_conversation_id_is_short_printable_ascii() -> None:
    assert "conversation_id" in violations([], "x" * 129)
    assert "conversation_id" in violations([], "tab\there")
    assert "conversation_id" in violations([], "café")
    assert conversation_from_proto([], "a" * 128, SETTINGS).conversation_id == "a" * 128


# --- standalone query ---------------------------------------------------------------------------------------

ELENA = Conversation((Turn(Role.USER, "What does Elena Varga think about the KV cache?"), Turn(Role.ASSISTANT, "x")))


@pytest.mark.parametrize(
    ("query", "follow_up"),
    [
        ("How did he decide which LoRA rank to use?", True),
        ("And the latency?", True),
        ("What about speculative decoding?", True),
        ("Why?", True),
        ("Which beta value worked best for preference optimisation of the style model?", False),
    ],
)
def test_follow_ups_are_told_from_standalone_questions(query: str, follow_up: bool) -> None:
    assert is_follow_up(query) is follow_up


def test_a_follow_up_carries_the_words_of_earlier_questions_and_a_standalone_question_does_not() -> None:
    carried = lexical_standalone("What did she measure about it?", ELENA)
    assert carried.startswith("What did she measure about it? (")
    assert "Elena" in carried and "Varga" in carried and "KV" in carried and "cache" in carried
    standalone = "Which beta value worked best for preference optimisation of the style model?"
    assert lexical_standalone(standalone, ELENA) == standalone
    assert lexical_standalone("And why?", Conversation()) == "And why?"  # no earlier question


def test_the_llm_rewrite_is_strict_and_bounded() -> None:
    long_turn = Conversation(tuple(Turn(Role.USER if i % 2 == 0 else Role.ASSISTANT, "w " * 400) for i in range(8)))
    prompt = rewrite_prompt("And why?", long_turn.dialogue)
    user = prompt.messages[-1][1]
    assert user.count("Reader:") + user.count("Writer:") == 4 and len(user) < 1600
    query = "How did he decide which LoRA rank to use?"
    assert parse_rewrite("How did Jonas Lindqvist decide which LoRA rank to use?\nmore", query).startswith("How did")
    assert parse_rewrite("Standalone question: How did Jonas decide the LoRA rank to use?", query).startswith("How")
    assert parse_rewrite("The answer to the question is:", query) == ""  # not a question
    assert parse_rewrite("What is QLoRA?", query) == ""  # drifted: lost the follow-up's own words
    assert parse_rewrite("", query) == ""


# --- prompt -------------------------------------------------------------------------------------------------


async def count_words(prompt: Prompt) -> int:
    text = prompt.text if prompt.text is not None else " ".join(c for _, c in prompt.messages)
    return len(text.split())


def sources(n: int = 2) -> list:
    chunks = [
        ScoredChunk(Chunk(d, Kind.POST, "elena-varga", "Elena Varga", 0, "fact " * 50, "", ""), 0.9 - i / 10, 0.8)
        for i, d in enumerate("ab"[:n])
    ]
    return group_by_document(chunks)


CONVERSATION = Conversation(
    (
        Turn(Role.SYSTEM, "Answer briefly."),
        Turn(Role.USER, "oldest question " * 20),
        Turn(Role.ASSISTANT, "oldest answer " * 20),
        Turn(Role.USER, "recent question"),
        Turn(Role.ASSISTANT, "recent answer"),
    )
)


def test_earlier_turns_are_real_chat_messages_and_the_instruction_follows_the_services() -> None:
    prompt = render("And then?", sources(), None, "chat", CONVERSATION)
    roles = [r for r, _ in prompt.messages]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user"]
    system = prompt.messages[0][1]
    assert system.startswith(SYSTEM) and system.endswith("Answer briefly.")
    assert prompt.messages[-1][1].endswith("Question: And then?")


def test_alpaca_folds_the_conversation_into_the_instruction() -> None:
    prompt = render("And then?", sources(), None, "alpaca", CONVERSATION)
    assert prompt.text is not None
    assert "The conversation so far:\nReader: oldest question" in prompt.text
    assert "You: recent answer" in prompt.text
    assert prompt.text.index("Answer briefly.") < prompt.text.index("Reader:") < prompt.text.index("Question: And")


async def test_the_oldest_turns_go_first_and_the_context_and_question_stay() -> None:
    full = await fit_prompt("And then?", sources(), None, style="chat", budget=10_000, count=count_words,
                            conversation=CONVERSATION)  # fmt: skip
    assert full.history_used == 4 and full.history_dropped == 0
    tight = await fit_prompt("And then?", sources(), None, style="chat", budget=full.tokens - 50, count=count_words,
                             conversation=CONVERSATION)  # fmt: skip
    assert tight.history_dropped == 2 and tight.history_used == 2 and tight.dropped == 0
    assert [r for r, _ in tight.prompt.messages] == ["system", "user", "assistant", "user"]
    assert tight.prompt.messages[1][1] == "recent question"
    assert tight.prompt.messages[0][1].endswith("Answer briefly.")  # the instruction stays
    assert [s.document_id for s in tight.used] == ["a", "b"]  # no context cut while a turn was left


# --- trace ----------------------------------------------------------------------------------------------------


def test_the_trace_shows_a_bounded_history() -> None:
    long = Conversation(tuple(Turn(Role.USER, f"{i} " + "x" * 1000) for i in range(10)), "c")
    shown = long.shown()
    assert len(shown) == HISTORY_TRACE_TURNS and shown[-1]["content"].startswith("9 ")
    assert all(len(t["content"]) <= HISTORY_TRACE_CHARS for t in shown)
