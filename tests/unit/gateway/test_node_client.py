"""clients/node/ask.js against the FakeRag gRPC server: sources first, the streamed answer, the cited sources,
follow-ups with the conversation so far, errors as exit codes."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import grpc
import pytest

from llmtwin.rag.v1 import rag_service_pb2 as rag_pb2
from tests.support.fake_rag import Failure, FakeRag, FakeRagServer

CLIENT_DIR = Path(__file__).resolve().parents[3] / "clients" / "node"
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(
    NODE is None or not (CLIENT_DIR / "node_modules").is_dir(),
    reason="needs node and `npm install` in clients/node",
)


async def ask(*args: str) -> tuple[int, str, str]:
    """Run ask.js without blocking the loop that serves the fake; (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        str(NODE), str(CLIENT_DIR / "ask.js"), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout=20)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_prints_the_sources_then_the_streamed_answer(rag: FakeRagServer, fake: FakeRag) -> None:
    code, out, err = await ask("What is an LLM twin?", "--target", rag.target, "--author", "Paul Iusztin")

    assert code == 0, err
    sources, rest = out.split("Answer:\n")
    answer, cited = rest.split("\nCited:\n")
    # One entry per document (the fake's three chunks come from two), with its evidence.
    assert sources.splitlines() == [
        "Sources:",
        "  1. An end-to-end framework for production-ready LLM systems — Paul Iusztin (article) score 0.910,"
        " 2 passages",
        "     https://example.org/llm-twin",
        '     "The LLM Twin learns to write like you."',
        "  2. Fine-tuning with DPO — Maxime Labonne (post) score 0.550",
        "     https://example.org/dpo",
        '     "Preference alignment after supervised fine-tuning."',
        "",
    ]
    assert answer.strip() == fake.answer
    assert cited.splitlines() == [
        "  [1] An end-to-end framework for production-ready LLM systems https://example.org/llm-twin",
        "  [2] Fine-tuning with DPO https://example.org/dpo",
    ]
    assert "end_of_sequence" in err and "fake-model" in err
    assert fake.requests[-1].query == "What is an LLM twin?"
    assert fake.requests[-1].options.author == "Paul Iusztin"


async def test_without_sources_it_lists_the_documents_and_no_citations(rag: FakeRagServer, fake: FakeRag) -> None:
    fake.sources = ()  # a RAG service older than the field
    fake.answer = "Nothing cited."

    code, out, err = await ask("What is an LLM twin?", "--target", rag.target)

    assert code == 0, err
    assert "  3. An end-to-end framework for production-ready LLM systems — Paul Iusztin (article) score 0.420\n" in out
    assert "Cited:" not in out and out.endswith("Answer:\nNothing cited.\n")


async def test_a_grpc_error_exits_non_zero_with_the_status(rag: FakeRagServer, fake: FakeRag) -> None:
    fake.fail = Failure(grpc.StatusCode.INVALID_ARGUMENT, violations=[("options.author", "unknown author")])

    code, out, err = await ask("Who?", "--target", rag.target, "--author", "Nobody")

    assert code == 1
    assert "INVALID_ARGUMENT (3)" in err
    assert "reason: INVALID_ARGUMENT (rag.llmtwin)" in err
    assert "field options.author: unknown author" in err
    assert out == ""


async def test_a_follow_up_sends_the_conversation_so_far(rag: FakeRagServer, fake: FakeRag) -> None:
    fake.answer = "A model that writes like you [1]."

    code, out, err = await ask(
        "What is an LLM twin?", "--target", rag.target, "--then", "How is it trained?", "--then", "And tested?"
    )

    assert code == 0, err
    assert out.count("Answer:\n") == 3
    assert "\nFollow-up: How is it trained?\nSources:\n" in out and "\nFollow-up: And tested?\n" in out
    first, second, third = fake.requests
    assert list(first.history) == [] and len(first.conversation_id) == 36
    assert first.conversation_id == second.conversation_id == third.conversation_id
    assert second.query == "How is it trained?"
    assert [(t.role, t.content) for t in second.history] == [
        (rag_pb2.TURN_ROLE_USER, "What is an LLM twin?"),
        (rag_pb2.TURN_ROLE_ASSISTANT, "A model that writes like you [1]."),
    ]
    assert [t.content for t in third.history] == [
        "What is an LLM twin?",
        "A model that writes like you [1].",
        "How is it trained?",
        "A model that writes like you [1].",
    ]


async def test_a_given_conversation_id_is_used(rag: FakeRagServer, fake: FakeRag) -> None:
    code, _, err = await ask("Hi?", "--target", rag.target, "--conversation-id", "chat-7")

    assert code == 0, err
    assert fake.requests[-1].conversation_id == "chat-7" and list(fake.requests[-1].history) == []
