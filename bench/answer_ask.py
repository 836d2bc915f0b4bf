"""How bench/answer_eval.py asks a question: one AnswerStream over gRPC, or one POST /v1/answer/stream on the
gateway, with a fixed seed, timed from the client."""

from __future__ import annotations

import json
import time
from typing import Any

import grpc
from answer_metrics import Outcome, Question
from google.protobuf import json_format

from llmtwin.llm.v1 import llm_service_pb2 as llm_pb
from llmtwin.rag.v1 import rag_service_pb2 as pb
from llmtwin.rag.v1 import rag_service_pb2_grpc as pb_grpc
from rag_service.pipeline.sources import CITATION

SEED = 7


def request(question: Question, parameters: dict[str, Any]) -> pb.AnswerRequest:
    """The AnswerRequest for a question: service defaults, the configuration's parameters, a fixed seed."""
    message = pb.AnswerRequest(query=question.text, request_id=f"eval-{question.id}")
    json_format.ParseDict({"seed": SEED, **parameters}, message.parameters)
    return message


def context_text(context: pb.AnswerContext) -> str:
    """All text the prompt could have drawn on."""
    return "\n".join(d.content for d in context.documents)


def source_numbers(context: pb.AnswerContext) -> dict[int, str]:
    """Citation number -> document id: the context's grouped sources when the service sends them, else the
    documents in order of first appearance (how the prompt numbers them)."""
    if context.sources:  # a service older than `sources` sends none
        return {s.number: s.document_id for s in context.sources}
    return {i: d.document_id for i, d in enumerate(context.documents, 1)}


def cited_documents(answer: str, sources: dict[int, str]) -> list[str]:
    """Documents the answer cites with [n] markers that point at a source, in order, without repeats."""
    numbers = [int(n) for group in CITATION.findall(answer) for n in group.split(",")]
    return list(dict.fromkeys(sources[n] for n in numbers if n in sources))


async def ask_grpc(stub: pb_grpc.RagServiceStub, question: Question, parameters: dict[str, Any]) -> Outcome:
    """One AnswerStream call, timed from the client."""
    outcome = Outcome(question)
    start = time.perf_counter()
    pieces: list[str] = []
    try:
        async for message in stub.AnswerStream(request(question, parameters), timeout=300):
            kind = message.WhichOneof("event")
            if kind == "context":
                outcome.context = context_text(message.context)
                outcome.sources = source_numbers(message.context)
            elif kind == "delta":
                if not pieces:
                    outcome.ttft_s = time.perf_counter() - start
                pieces.append(message.delta.text)
            elif kind == "final":
                final = message.final
                outcome.final_answer = final.answer
                outcome.finish = llm_pb.FinishReason.Name(final.finish_reason)
                outcome.completion_tokens = final.usage.completion_tokens
                outcome.prompt_tokens = final.usage.prompt_tokens
    except grpc.aio.AioRpcError as exc:
        outcome.error = f"{exc.code().name}: {exc.details()}"
    outcome.total_s = time.perf_counter() - start
    outcome.answer = outcome.final_answer or "".join(pieces)  # the final's text is the answer (loop guard)
    outcome.finish = outcome.finish.removeprefix("FINISH_REASON_").lower()
    outcome.cited = cited_documents(outcome.answer, outcome.sources)
    return outcome


async def ask_gateway(url: str, question: Question, parameters: dict[str, Any]) -> Outcome:
    """One POST /v1/answer/stream, its server-sent events parsed as they arrive, timed from the client."""
    import httpx

    outcome = Outcome(question)
    body = {"query": question.text, "parameters": {"seed": SEED, **parameters}}
    pieces: list[str] = []
    start = time.perf_counter()
    async with (
        httpx.AsyncClient(base_url=url, timeout=300) as client,
        client.stream("POST", "/v1/answer/stream", json=body) as response,
    ):
        if response.status_code != 200:
            error = json.loads(await response.aread()).get("error", {})
            outcome.error = f"{error.get('status')}: {error.get('message')}"
        event = ""
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                data = json.loads(line.split(":", 1)[1])
                if event == "context":
                    outcome.context = "\n".join(d["content"] for d in data.get("documents", []))
                    sources = data.get("sources") or []
                    outcome.sources = {s["number"]: s["document_id"] for s in sources} or {
                        i: d["document_id"] for i, d in enumerate(data.get("documents", []), 1)
                    }
                elif event == "delta":
                    if not pieces:
                        outcome.ttft_s = time.perf_counter() - start
                    pieces.append(data["text"])
                elif event == "done":
                    outcome.final_answer = data.get("answer", "")
                    outcome.finish = data.get("finish_reason", "")
                    outcome.completion_tokens = data.get("usage", {}).get("completion_tokens", 0)
                    outcome.prompt_tokens = data.get("usage", {}).get("prompt_tokens", 0)
                elif event == "error":
                    outcome.error = f"{data['error'].get('status')}: {data['error'].get('message')}"
    outcome.total_s = time.perf_counter() - start
    outcome.answer = outcome.final_answer or "".join(pieces)
    outcome.cited = cited_documents(outcome.answer, outcome.sources)
    return outcome
