"""clients/node/ask.js against the real RAG service: the sources, then the streamed answer."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.e2e.stack import Stack
from tests.support.procs import ROOT

CLIENT_DIR = ROOT / "clients" / "node"
NODE = shutil.which("node")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        NODE is None or not (CLIENT_DIR / "node_modules").is_dir(),
        reason="needs node and `npm install` in clients/node",
    ),
]


def test_the_node_client_prints_the_sources_then_the_answer(stack: Stack) -> None:
    assert NODE is not None
    args = [NODE, str(CLIENT_DIR / "ask.js"), stack.question, "--target", stack.rag_target]
    args += ["--max-new-tokens", str(stack.max_new_tokens), "--request-id", "e2e-node-1"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)

    assert out.returncode == 0, out.stderr
    sources, answer = out.stdout.split("Answer:\n")
    assert f"— {stack.author} (" in sources
    assert "Continuous batching on a single A10G: what actually changed" in sources
    assert answer.strip()
    assert "model HuggingFaceTB/SmolLM2-135M-Instruct, request e2e-node-1]" in out.stderr
    # The client's request id follows the call into the LLM service's log.
    assert any(x["msg"] == "generation" and x["request_id"] == "e2e-node-1" for x in stack.llm.json_log())


def test_the_node_client_asks_a_follow_up_with_the_conversation_so_far(stack: Stack) -> None:
    assert NODE is not None
    follow_up = "And what does she say about the GPU memory it needs?"
    args = [NODE, str(CLIENT_DIR / "ask.js"), stack.question, "--target", stack.rag_target]
    args += ["--max-new-tokens", str(stack.max_new_tokens), "--then", follow_up]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)

    assert out.returncode == 0, out.stderr
    first, second = out.stdout.split(f"\nFollow-up: {follow_up}\n")
    assert f"— {stack.author} (" in first
    sources = [line for line in second.split("Answer:\n")[0].splitlines() if " — " in line]
    # "she" is the author of the first question: the follow-up searched her writing only.
    assert sources and all(f"— {stack.author} (" in line for line in sources), second
