"""(c) of bench/rag_bench.py: the RAG's own share of time to first token.

TTFT of AnswerStream seen by the client minus the LLM's TTFT for the same prompt, measured by calling the
LLM service's GenerateStream directly with that prompt (rebuilt from the context event with the service's own
template, its first letter lowercased so that llama.cpp's prompt cache cannot serve it).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import grpc
from common.services import Service
from common.stats import p50_p99_ms, percentile

from llmtwin.llm.v1 import llm_service_pb2 as llm_pb
from llmtwin.llm.v1 import llm_service_pb2_grpc as llm_grpc
from llmtwin.rag.v1 import rag_service_pb2 as pb
from llmtwin.rag.v1 import rag_service_pb2_grpc as pb_grpc
from rag_service.convert import PB_TO_KIND
from rag_service.llm_client import Prompt, generate_request
from rag_service.pipeline.prompt import render
from rag_service.pipeline.sources import group_by_document
from rag_service.types import Author, Chunk, ScoredChunk

ANSWER_TOKENS = 4  # only the first token matters


@dataclass
class Ttft:
    """One AnswerStream and the direct LLM call with the same prompt."""

    answer_s: float  # client-side TTFT of AnswerStream
    server_s: float  # the RAG final's time_to_first_token_s (as the RAG service saw it)
    llm_s: float  # client-side TTFT of GenerateStream with the same prompt, straight to the LLM service
    llm_reported_s: float  # the LLM final's own time_to_first_token_s
    prompt_tokens: int
    direct_prompt_tokens: int
    steps: dict[str, float]


def rebuilt_prompt_request(
    query: str, context: pb.AnswerContext, parameters: llm_pb.GenerationParameters
) -> llm_pb.GenerateRequest:
    """The GenerateRequest the RAG sent, rebuilt from its context event, first letter lowercased (no cache hit)."""
    hits = [
        ScoredChunk(
            Chunk(
                d.document_id,
                PB_TO_KIND[d.kind],
                d.author_id,
                d.author_full_name,
                d.chunk_index,
                d.content,
                d.title,
                d.link,
            ),
            d.vector_score,
            d.score,
        )
        for d in context.documents
    ]
    author = Author(context.author.id, context.author.full_name) if context.HasField("author") else None
    # The RAG runs with RAG_CONTEXT_TOKENS=0 here (whole chunks: a prompt that can be rebuilt exactly); its
    # compressor still embeds the sentences (for the evidence), so that cost stays in the overhead.
    prompt = render(query, group_by_document(hits), author, "chat")
    (role, system), *rest = prompt.messages
    prompt = Prompt(messages=((role, system[0].lower() + system[1:]), *rest))
    return generate_request(prompt, parameters)


async def measure_ttft(rag: Service, llm: Service, queries: list[str], n: int, warmup: int) -> list[Ttft]:
    """n sequential AnswerStreams (expansion and self-query off), each followed by the direct LLM call."""
    options = pb.RetrievalOptions(expand_queries=0, self_query=False, rerank=True)
    parameters = llm_pb.GenerationParameters(max_new_tokens=ANSWER_TOKENS, temperature=0)
    out: list[Ttft] = []
    async with (
        grpc.aio.insecure_channel(rag.target) as rag_channel,
        grpc.aio.insecure_channel(llm.target) as llm_channel,
    ):
        rag_stub, llm_stub = pb_grpc.RagServiceStub(rag_channel), llm_grpc.LlmServiceStub(llm_channel)
        for i in range(n + warmup):
            query = queries[i % len(queries)]
            start, first, context, final = time.perf_counter(), 0.0, None, None
            request = pb.AnswerRequest(query=query, options=options, parameters=parameters)
            async for message in rag_stub.AnswerStream(request, timeout=60):
                kind = message.WhichOneof("event")
                if kind == "context":
                    context = message.context
                elif kind == "delta" and not first:
                    first = time.perf_counter() - start
                elif kind == "final":
                    final = message.final
            assert context is not None and final is not None
            start, direct_first, direct_final = time.perf_counter(), 0.0, None
            async for message in llm_stub.GenerateStream(
                rebuilt_prompt_request(query, context, parameters), timeout=60
            ):
                if message.HasField("final"):
                    direct_final = message.final
                elif not direct_first:
                    direct_first = time.perf_counter() - start
            assert direct_final is not None
            if i >= warmup:
                out.append(
                    Ttft(
                        answer_s=first,
                        server_s=final.time_to_first_token_s,
                        llm_s=direct_first,
                        llm_reported_s=direct_final.time_to_first_token_s,
                        prompt_tokens=final.usage.prompt_tokens,
                        direct_prompt_tokens=direct_final.usage.prompt_tokens,
                        steps={t.step: t.seconds for t in final.timings},
                    )
                )
    return out


def print_ttft(name: str, results: list[Ttft]) -> None:
    """One block of (c)."""
    med = statistics.median
    answer = [r.answer_s for r in results]
    overhead = [r.answer_s - r.llm_s for r in results]
    steps = {s: med([r.steps[s] for r in results if s in r.steps]) for s in ("embed", "search", "rerank", "prompt")}
    print(
        f"{name:<9} {len(results):>3} {1000 * med(answer):>8.1f} {1000 * percentile(answer, 99):>8.1f} "
        f"{1000 * med([r.server_s for r in results]):>8.1f} {1000 * med([r.llm_s for r in results]):>8.1f} "
        f"{1000 * med([r.llm_reported_s for r in results]):>8.1f} {1000 * med(overhead):>9.1f} "
        f"{1000 * percentile(overhead, 99):>9.1f}   "
        + " ".join(f"{k} {1000 * v:.1f}" for k, v in steps.items())
        + f"   prompt {med([r.prompt_tokens for r in results]):.0f} tok "
        f"(direct {statistics.fmean([r.direct_prompt_tokens - r.prompt_tokens for r in results]):+.1f})",
        flush=True,
    )


TTFT_HEADER = (
    f"{'llm':<9} {'n':>3} {'ans p50':>8} {'ans p99':>8} {'rag-seen':>8} {'llm p50':>8} {'llm own':>8} "
    f"{'ovh p50':>9} {'ovh p99':>9}   RAG step p50s (ms)"
)


def ttft_summary(results: list[Ttft]) -> dict[str, object]:
    """(c) as figures: client TTFT, the RAG's overhead and each step, p50/p99 in ms."""
    steps = {s: [r.steps[s] for r in results if s in r.steps] for s in ("embed", "search", "rerank", "prompt")}
    return {
        "n": len(results),
        "answer_ttft": p50_p99_ms([r.answer_s for r in results]),
        "llm_ttft": p50_p99_ms([r.llm_s for r in results]),
        "overhead": p50_p99_ms([r.answer_s - r.llm_s for r in results]),
        "steps": {k: p50_p99_ms(v) for k, v in steps.items() if v},
    }
