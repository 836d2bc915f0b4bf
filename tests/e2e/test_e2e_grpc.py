"""gRPC clients of the RAG service: the real grpcurl through reflection or the shipped protoset, the prompt trace
in Opik, and the request and trace ids in the LLM service's log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.e2e.stack import Stack, wait_until
from tests.support.procs import ROOT, grpcurl, json_stream

pytestmark = pytest.mark.slow

PROTOSET = str(ROOT / "gen" / "llmtwin.protoset")
REQUEST_ID = "e2e-grpcurl-1"


@pytest.fixture(scope="module")
def streamed(stack: Stack) -> list[dict[str, Any]]:
    """One AnswerStream called with grpcurl through reflection: the messages it printed."""
    request = {
        "query": stack.question,
        "parameters": {"max_new_tokens": stack.max_new_tokens},
        "request_id": REQUEST_ID,
    }
    out = grpcurl(stack.rag_target, "llmtwin.rag.v1.RagService/AnswerStream", data=request, timeout=60)
    assert out.returncode == 0, out.stderr
    return json_stream(out.stdout)


def test_reflection_lists_the_rag_service(stack: Stack) -> None:
    services = grpcurl(stack.rag_target, "list").stdout.split()

    assert {"llmtwin.rag.v1.RagService", "grpc.health.v1.Health"} <= set(services)
    described = grpcurl(stack.rag_target, "describe", "llmtwin.rag.v1.RagService").stdout
    assert "rpc AnswerStream ( .llmtwin.rag.v1.AnswerRequest ) returns ( stream" in described


def test_answer_stream_sends_the_context_then_deltas_then_the_final(
    stack: Stack, streamed: list[dict[str, Any]]
) -> None:
    first, *deltas, last = streamed

    context = first["context"]
    assert context["author"] == {"id": "elena-varga", "full_name": stack.author}
    documents = context["documents"]
    assert documents and len(documents) <= 3
    ingested = {doc["id"]: doc for doc in stack.ingested}
    for doc in documents:
        source = ingested[doc["document_id"]]
        assert doc["author_full_name"] == stack.author and doc["author_id"] == "elena-varga"
        assert doc["kind"] == f"CONTENT_KIND_{source['kind'].upper()}"
        assert doc.get("title", "") == source.get("title", "") and doc.get("link", "") == source.get("link", "")
        assert doc["content"] and doc["content"] in source["content"]
    assert "art-elena-001" in [doc["document_id"] for doc in documents]  # the article about continuous batching

    assert deltas and all(set(message) == {"delta"} for message in deltas)
    final = last["final"]
    assert final["answer"].strip() and final["answer"] == "".join(m["delta"].get("text", "") for m in deltas)
    usage = final["usage"]
    assert 0 < usage["completion_tokens"] <= stack.max_new_tokens
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert final["request_id"] == REQUEST_ID and final["trace_id"]
    assert final["model_id"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert {"self_query", "embed", "search", "rerank", "prompt", "generate"} <= {t["step"] for t in final["timings"]}


def test_the_shipped_protoset_works_without_reflection(stack: Stack) -> None:
    described = grpcurl("-protoset", PROTOSET, "describe", "llmtwin.rag.v1.RagService")
    assert described.returncode == 0, described.stderr
    assert "rpc Retrieve ( .llmtwin.rag.v1.RetrieveRequest )" in described.stdout

    request = {"query": stack.question, "options": {"top_k": 2}}
    out = grpcurl("-protoset", PROTOSET, stack.rag_target, "llmtwin.rag.v1.RagService/Retrieve", data=request)
    assert out.returncode == 0, out.stderr
    response: Any = json_stream(out.stdout)[0]
    # The protoset carries json_name, so grpcurl prints proto3 JSON's lowerCamelCase here; descriptors served by
    # Python's reflection have none, so the reflection calls above print the proto field names.
    assert [doc["authorFullName"] for doc in response["context"]["documents"]] == [stack.author] * 2


def test_opik_receives_the_trace_with_every_pipeline_span(stack: Stack, streamed: list[dict[str, Any]]) -> None:
    trace_id = streamed[-1]["final"]["trace_id"]

    trace = wait_until(lambda: next((t for t in stack.opik.traces if t["id"] == trace_id), None), timeout_s=15)
    assert trace["project_name"] == "llm-twin-e2e"
    assert trace["input"] == {"query": stack.question}
    assert trace["output"] == {"answer": streamed[-1]["final"]["answer"]}
    assert trace["metadata"]["request_id"] == REQUEST_ID

    def spans() -> dict[str, dict[str, Any]] | None:
        found = {s["name"]: s for s in stack.opik.spans if s["trace_id"] == trace_id}
        return found if "generate" in found else None

    by_name = wait_until(spans, timeout_s=15)
    names = set(by_name)
    assert {"self_query", "embed", "rerank", "prompt", "generate"} <= names
    assert any(name.startswith("search:") for name in names)
    assert by_name["self_query"]["output"] == {"author": stack.author}
    generate = by_name["generate"]
    assert generate["type"] == "llm" and generate["model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert generate["usage"]["completion_tokens"] == streamed[-1]["final"]["usage"]["completion_tokens"]
    assert stack.opik.unknown == []

    # Every span lies inside the answer's trace, children inside their parents: one clock for all of them.
    def window(record: dict[str, Any]) -> tuple[datetime, datetime]:
        return tuple(datetime.fromisoformat(record[k].replace("Z", "+00:00")) for k in ("start_time", "end_time"))  # type: ignore[return-value]

    trace_start, trace_end = window(trace)
    assert abs((trace_start - datetime.now(UTC)).total_seconds()) < 3600  # dated today, not 2083
    slack = timedelta(milliseconds=1)  # the SDK keeps microseconds; ISO strings may round
    for span in by_name.values():
        start, end = window(span)
        assert trace_start - slack <= start <= end <= trace_end + slack, span["name"]
        parent = next((p for p in by_name.values() if p["id"] == span.get("parent_span_id")), None)
        if parent is not None:
            parent_start, parent_end = window(parent)
            assert parent_start - slack <= start <= end <= parent_end + slack, span["name"]


def test_the_llm_service_logs_the_request_and_trace_ids(stack: Stack, streamed: list[dict[str, Any]]) -> None:
    trace_id = streamed[-1]["final"]["trace_id"]

    def generation() -> dict[str, Any] | None:
        lines = stack.llm.json_log()
        return next((x for x in lines if x["msg"] == "generation" and x["request_id"] == REQUEST_ID), None)

    line = wait_until(generation, timeout_s=10)
    assert line.get("trace_id") == trace_id, line
    assert line["status"] == "OK" and line["backend"] == "embedded"
    assert line["completion_tokens"] == streamed[-1]["final"]["usage"]["completion_tokens"]
