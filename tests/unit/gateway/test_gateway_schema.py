"""The gateway's OpenAPI schema states every rule the server enforces: schemathesis (every check, every phase) finds
nothing, and the RAG service (a fake that applies the RAG service's own validation) never refuses a request the
gateway let through."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path
from typing import Any

import httpx

from gateway.app import create_app
from gateway.models import (
    DEFAULT_MAX_HISTORY_CHARS,
    DEFAULT_MAX_HISTORY_TURNS,
    DEFAULT_MAX_QUERY_CHARS,
    MAX_INSTRUCTION_CHARS,
    MAX_STOP_LENGTH,
    MAX_STOP_SEQUENCES,
    NOT_BLANK_PATTERN,
)
from gateway.settings import Settings
from rag_service.settings import Settings as RagSettings
from servekit import limits
from tests.support.fake_rag import FakeRag, serve_fake_rag
from tests.support.gateway import serving_gateway

ST = Path(sys.executable).parent / "st"  # the schemathesis CLI of this environment


async def test_schemathesis_with_every_check_finds_nothing_and_the_rag_service_refuses_nothing(tmp_path: Path) -> None:
    fake = FakeRag(validate=RagSettings())
    async with serve_fake_rag(fake) as rag, serving_gateway(rag.target, request_timeout_s=10) as url:
        # A subprocess, so that this loop keeps serving; seeded, so every run sends the same requests.
        run = await asyncio.create_subprocess_exec(
            *(str(ST), "run", f"{url}/openapi.json", "--checks", "all", "--max-examples", "30", "--seed", "1"),
            *("--workers", "1", "--continue-on-failure", "--no-color"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=tmp_path,  # its .schemathesis/ state
        )
        output = (await run.communicate())[0].decode()

    summary = re.search(r"(\d+) generated, (\d+) passed", output)
    assert run.returncode == 0 and summary is not None, output[-6000:]
    assert summary.group(1) == summary.group(2)
    assert fake.rejected == 0  # every request the schema calls valid passed the RAG service's own checks
    assert len(fake.requests) > 50  # and many did reach it


def schema_of(app: Any) -> dict[str, Any]:
    """The app's OpenAPI components."""
    return app.openapi()["components"]["schemas"]  # type: ignore[no-any-return]


def test_the_schema_states_the_query_rules_and_the_contract_ranges() -> None:
    schemas = schema_of(create_app(Settings()))
    query = schemas["AnswerRequest"]["properties"]["query"]
    assert (query["minLength"], query["maxLength"], query["pattern"]) == (1, 2000, NOT_BLANK_PATTERN)
    top_k = schemas["RetrievalOptions"]["properties"]["top_k"]["anyOf"][0]
    assert (top_k["type"], top_k["minimum"], top_k["maximum"]) == ("integer", 1, 50)
    stops = schemas["GenerationParameters"]["properties"]["stop_sequences"]
    assert stops["maxItems"] == 8 and (stops["items"]["minLength"], stops["items"]["maxLength"]) == (1, 64)
    user = schemas["UserMessage"]["properties"]["content"]["anyOf"][0]
    assert (user["minLength"], user["maxLength"], user["pattern"]) == (1, 2000, NOT_BLANK_PATTERN)
    messages = schemas["ChatCompletionRequest"]["properties"]["messages"]
    assert messages["contains"]["properties"]["role"] == {"const": "user"}
    history = schemas["AnswerRequest"]["properties"]["history"]
    assert history["maxItems"] == 20 and (history["minContains"], history["maxContains"]) == (0, 1)
    assert history["contains"]["properties"]["role"] == {"const": "system"}
    dialogue = schemas["DialogueTurn"]["properties"]["content"]
    assert (dialogue["minLength"], dialogue["maxLength"], dialogue["pattern"]) == (1, 2000, NOT_BLANK_PATTERN)
    system = schemas["SystemTurn"]["properties"]["content"]
    assert (system["minLength"], system["maxLength"], system["pattern"]) == (1, 1000, NOT_BLANK_PATTERN)
    assert schemas["AnswerRequest"]["properties"]["conversation_id"]["pattern"] == "^[ -~]{0,128}$"


def test_the_limits_are_the_rag_service_ones() -> None:
    assert DEFAULT_MAX_QUERY_CHARS == RagSettings().max_query_chars == Settings().max_query_chars
    assert (MAX_STOP_SEQUENCES, MAX_STOP_LENGTH) == (limits.MAX_STOP_SEQUENCES, limits.MAX_STOP_LENGTH)
    rag = RagSettings()
    # The gateway may send fewer turns than the RAG service takes, never more; the same characters; the same
    # instruction limit.
    assert DEFAULT_MAX_HISTORY_TURNS == Settings().max_history_turns <= rag.max_history_turns
    assert DEFAULT_MAX_HISTORY_CHARS == Settings().max_history_chars <= rag.max_history_chars
    assert MAX_INSTRUCTION_CHARS == rag.max_instruction_chars


def test_not_blank_is_what_python_strips() -> None:
    # The RAG service strips the query; the schema's pattern must call blank exactly what strip() removes.
    for code in range(0x3001):
        char = chr(code)
        assert (re.search(NOT_BLANK_PATTERN, char) is None) == char.isspace(), hex(code)


async def test_a_configured_query_limit_is_stated_and_enforced() -> None:
    fake = FakeRag(validate=RagSettings(max_query_chars=10))
    async with (
        serve_fake_rag(fake) as rag,
        serving_gateway(rag.target, max_query_chars=10, max_history_turns=2) as url,
    ):
        async with httpx.AsyncClient(base_url=url) as http:
            schemas = (await http.get("/openapi.json")).json()["components"]["schemas"]
            too_long = await http.post("/v1/answer", json={"query": "x" * 11})
            chat_too_long = await http.post(
                "/v1/chat/completions",
                json={"messages": [{"role": "user", "content": [{"type": "text", "text": "x" * 11}]}]},
            )
            at_limit = await http.post("/v1/answer", json={"query": "x" * 10})
            turn = {"role": "user", "content": "x" * 10}
            history_ok = await http.post("/v1/answer", json={"query": "y", "history": [turn, turn]})
            too_many = await http.post("/v1/answer", json={"query": "y", "history": [turn] * 3})
            too_long_turn = await http.post(
                "/v1/answer", json={"query": "y", "history": [{**turn, "content": "x" * 11}]}
            )

    assert schemas["AnswerRequest"]["properties"]["query"]["maxLength"] == 10
    assert schemas["UserMessage"]["properties"]["content"]["anyOf"][0]["maxLength"] == 10
    assert too_long.status_code == 422
    assert too_long.json()["error"]["field_violations"][0]["field"] == "query"
    assert chat_too_long.status_code == 422 and chat_too_long.json()["error"]["param"] == "messages.0"
    assert at_limit.status_code == 200 and history_ok.status_code == 200
    assert schemas["AnswerRequest"]["properties"]["history"]["maxItems"] == 2
    assert schemas["DialogueTurn"]["properties"]["content"]["maxLength"] == 10
    assert too_many.json()["error"]["field_violations"][0]["field"] == "history"
    assert too_long_turn.json()["error"]["field_violations"][0]["field"] == "history.0.content"
    assert [r.query for r in fake.requests] == ["x" * 10, "y"] and fake.rejected == 0
