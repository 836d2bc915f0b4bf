"""Whole-stack benchmark: pre-retrieval cost per step, streaming against blocking, gateway overhead, 200 streams.

Starts, as processes on loopback: the LLM service (echo backend with a token delay, so answers take a
realistic time while the LLM costs no CPU), the RAG service (embedded qdrant-edge store in a temp dir,
corpus ingested over gRPC) and the gateway. This process is the client. Measured, questions one at a time:
  (a) AnswerStream with pre-retrieval (expansion + self-query) off and on: time per step from the final
      event (p50/p99), the RAG's time before the first token (the final's time_to_first_token_s minus the
      echo's own first-token delay) and its share of the answer time;
  (b) streaming against blocking: client-side TTFT of AnswerStream against the total time of the unary
      Answer on the same question set (the book's blocking design waits the whole answer); streams take
      every other question, blocking calls the others, as llama.cpp would serve a repeated prompt from cache;
  (c) gateway: TTFT and total time of POST /v1/answer/stream (SSE) and POST /v1/chat/completions
      (stream=true) against the direct gRPC AnswerStream;
  (d) 200 concurrent streams through the LLM service (GenerateStream) and through the RAG (AnswerStream),
      with bench/loadgen.py: status histogram, time to first message, peak of streams open at once;
  (e) optionally (b) again with the embedded model (SmolLM2-135M) instead of the echo.

    .venv/bin/python bench/stack_bench.py [--questions 20] [--token-delay-ms 5] [--streams 200] [--embedded 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import grpc
import httpx
import loadgen
from common.data import corpus_documents, question_rows
from common.paths import logs_dir
from common.services import Service, ingest_documents, spawn
from common.stats import p50_p99_ms, percentile

from llmtwin.llm.v1 import llm_service_pb2 as llm_pb
from llmtwin.rag.v1 import rag_service_pb2 as pb
from llmtwin.rag.v1 import rag_service_pb2_grpc as pb_grpc

STEPS = ("expand", "self_query", "embed", "search", "rerank", "prompt")
LIMITS = {"MAX_CONCURRENT": "256", "MAX_QUEUED": "256"}  # admission wide enough for (d)'s 200 streams


def dist(values: Sequence[float]) -> dict[str, float]:
    """p50/p99 in ms, and how many values."""
    return p50_p99_ms(values) | {"n": len(values)}


def spawn_llm(backend: str, delay_s: float, logs: Path) -> Service:
    """The LLM service with wide admission limits."""
    env = {"LLM_BACKEND": backend, "LLM_ECHO_TOKEN_DELAY_S": str(delay_s), "LLM_LOG_LEVEL": "WARNING"}
    env |= {"LLM_N_THREADS": "1"} | {f"LLM_{k}": v for k, v in LIMITS.items()}
    return spawn("llm_service", env, logs / f"stack-llm-{backend}.log")


def spawn_rag(llm: Service, store: str, logs: Path) -> Service:
    """The RAG service on the edge store, tracing off, wide admission limits."""
    env = {"RAG_LLM_TARGET": llm.target, "RAG_STORE_BACKEND": "edge", "RAG_QDRANT_PATH": store}
    env |= {"RAG_TRACING": "false", "RAG_LOG_LEVEL": "WARNING", "OPIK_TRACK_DISABLE": "true"}
    env |= {f"RAG_{k}": v for k, v in LIMITS.items()}
    return spawn("rag_service", env, logs / "stack-rag.log")


def spawn_gateway(rag: Service, logs: Path) -> Service:
    """The gateway, ready when /readyz answers 200."""
    env = {"GATEWAY_RAG_TARGET": rag.target, "GATEWAY_LOG_LEVEL": "warning"}
    return spawn("gateway", env, logs / "stack-gateway.log")


def request(query: str, pre: bool, tokens: int) -> pb.AnswerRequest:
    """An AnswerRequest with pre-retrieval (2 expansions + self-query) on or off."""
    options = pb.RetrievalOptions(expand_queries=2 if pre else 0, self_query=pre, rerank=True)
    parameters = llm_pb.GenerationParameters(max_new_tokens=tokens, temperature=0)
    return pb.AnswerRequest(query=query, options=options, parameters=parameters)


async def answer_stream(stub: pb_grpc.RagServiceStub, req: pb.AnswerRequest) -> tuple[float, float, Any]:
    """Client TTFT, client total and the final event of one AnswerStream."""
    start, first, final = time.perf_counter(), 0.0, None
    async for message in stub.AnswerStream(req, timeout=120):
        kind = message.WhichOneof("event")
        if kind == "delta" and not first:
            first = time.perf_counter() - start
        elif kind == "final":
            final = message.final
    return first, time.perf_counter() - start, final


async def pre_retrieval(stub: pb_grpc.RagServiceStub, queries: list[str], tokens: int, delay: float) -> dict:
    """(a): per-step times and the RAG's share of the answer, pre-retrieval off and on, alternating per query."""
    out: dict[str, Any] = {}
    runs: dict[bool, list[Any]] = {False: [], True: []}
    for query in queries:
        for pre in (False, True):
            runs[pre].append((await answer_stream(stub, request(query, pre, tokens)))[2])
    for pre, finals in runs.items():
        steps = {s: dist([t.seconds for f in finals for t in f.timings if t.step == s]) for s in STEPS}
        overhead = [max(0.0, f.time_to_first_token_s - delay) for f in finals]
        share = [o / f.total_time_s for o, f in zip(overhead, finals, strict=True)]
        out["on" if pre else "off"] = {
            "steps": {k: v for k, v in steps.items() if v["n"]},
            "overhead": dist(overhead),
            "answer_time": dist([f.total_time_s for f in finals]),
            "share_p50": statistics.median(share),
            "share_p99": percentile(share, 99),
        }
    return out


async def streaming_vs_blocking(stub: pb_grpc.RagServiceStub, queries: list[str], tokens: int) -> dict:
    """(b): AnswerStream's first token against the unary Answer's whole time, on the same question set.

    Streams take the even-numbered questions, blocking calls the odd-numbered ones, so that no prompt is sent
    twice: llama.cpp keeps earlier prompts in a RAM cache and would skip a repeated prompt's prefill (measured:
    a unary Answer after an AnswerStream of the same question had a TTFT of 0.06 s instead of 4 s).
    """
    ttft, total, blocking = [], [], []
    for query in queries[0::2]:
        first, whole, _ = await answer_stream(stub, request(query, False, tokens))
        ttft.append(first)
        total.append(whole)
    for query in queries[1::2]:
        start = time.perf_counter()
        await stub.Answer(request(query, False, tokens), timeout=120)
        blocking.append(time.perf_counter() - start)
    return {
        "stream_ttft": dist(ttft),
        "stream_total": dist(total),
        "blocking_total": dist(blocking),
        "ratio_p50": statistics.median(ttft) / statistics.median(blocking),
        "tokens": tokens,
    }


async def http_stream(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> tuple[float, float]:
    """Client TTFT (first answer text) and total of one streamed HTTP answer (SSE or OpenAI chunks)."""
    start, first = time.perf_counter(), 0.0
    async with client.stream("POST", path, json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if first or not line.startswith("data:"):
                continue
            if path.endswith("/stream"):
                if '"text"' in line:
                    first = time.perf_counter() - start
            elif '"content":"' in line.replace(" ", "") and '"content":""' not in line.replace(" ", ""):
                first = time.perf_counter() - start
    return first, time.perf_counter() - start


async def gateway_overhead(
    stub: pb_grpc.RagServiceStub, gateway: Service, queries: list[str], tokens: int
) -> dict[str, Any]:
    """(c): SSE and OpenAI streaming against the direct gRPC call, round-robin per question."""
    times: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in ("grpc", "sse", "openai")}
    options = {"expand_queries": 0, "self_query": False, "rerank": True}
    async with httpx.AsyncClient(base_url=f"http://{gateway.target}", timeout=120) as client:
        for i, query in enumerate(queries + queries[:1]):
            first, whole, _ = await answer_stream(stub, request(query, False, tokens))
            sse = await http_stream(
                client,
                "/v1/answer/stream",
                {"query": query, "options": options, "parameters": {"max_new_tokens": tokens, "temperature": 0}},
            )
            oa = await http_stream(
                client,
                "/v1/chat/completions",
                {
                    "model": "llm-twin",
                    "stream": True,
                    "messages": [{"role": "user", "content": query}],
                    "max_tokens": tokens,
                    "temperature": 0,
                    "options": options,
                },
            )
            if i == 0:
                continue  # warm-up
            for name, (f, w) in (("grpc", (first, whole)), ("sse", sse), ("openai", oa)):
                times[name][0].append(f)
                times[name][1].append(w)
    out: dict[str, Any] = {k: {"ttft": dist(v[0]), "total": dist(v[1])} for k, v in times.items()}
    for name in ("sse", "openai"):
        added = [g - d for g, d in zip(times[name][0], times["grpc"][0], strict=True)]
        out[name]["added_ttft"] = dist(added)
    return out


async def held_streams(
    llm: Service, rag: Service, streams: int, queries: list[str], tokens: int, rag_tokens: int
) -> dict[str, Any]:
    """(d): `streams` concurrent streams through the LLM service and through the RAG, one round each.

    Through the RAG, streams are longer: their first message waits for the question's embedding (~2 s for
    200 questions here), and they must still be open when the last one starts.
    """
    words = " ".join(queries[0].split()[:8])
    gen = llm_pb.GenerateRequest(prompt=words, parameters=llm_pb.GenerationParameters(max_new_tokens=tokens))
    direct = await loadgen.load(llm.target, "llm.GenerateStream", gen, concurrency=streams, total=streams, timeout=120)
    via_rag = await loadgen.load(
        rag.target,
        "rag.AnswerStream",
        lambda i: request(queries[i % len(queries)], False, rag_tokens),
        concurrency=streams,
        total=streams,
        timeout=120,
    )
    return {"llm": direct.summary(), "rag": via_rag.summary()}


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=20, help="questions per measurement (a), (b), (c)")
    parser.add_argument("--tokens", type=int, default=128, help="answer tokens")
    parser.add_argument("--token-delay-ms", type=float, default=5.0, help="echo backend's delay between tokens")
    parser.add_argument("--streams", type=int, default=200, help="concurrent streams held in (d)")
    parser.add_argument("--stream-tokens", type=int, default=100, help="tokens per LLM stream in (d)")
    parser.add_argument("--rag-stream-tokens", type=int, default=600, help="tokens per RAG stream in (d)")
    parser.add_argument("--embedded", type=int, default=0, help="questions for (e) with the embedded model; 0: skip")
    parser.add_argument("--embedded-tokens", type=int, default=64)
    return parser


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Runs (a)-(e) and returns the figures."""
    logs = logs_dir()
    queries = [q["question"] for q in question_rows()]
    documents = corpus_documents()
    delay = args.token_delay_ms / 1000
    out: dict[str, Any] = {"token_delay_ms": args.token_delay_ms, "tokens": args.tokens}
    with ExitStack() as stack:
        store = stack.enter_context(tempfile.TemporaryDirectory(prefix="stack-bench-"))
        llm = spawn_llm("echo", delay, logs)
        stack.callback(llm.stop)
        rag = spawn_rag(llm, store, logs)
        stack.callback(rag.stop)
        await ingest_documents(rag.target, documents)
        gateway = spawn_gateway(rag, logs)
        stack.callback(gateway.stop)
        sample = queries[: args.questions]
        async with grpc.aio.insecure_channel(rag.target) as channel:
            stub = pb_grpc.RagServiceStub(channel)
            await answer_stream(stub, request(sample[0], True, 8))  # warm-up
            out["pre_retrieval"] = await pre_retrieval(stub, sample, args.tokens, delay)
            print("(a) pre-retrieval:", json.dumps(out["pre_retrieval"]), flush=True)
            out["streaming"] = {"echo": await streaming_vs_blocking(stub, sample, args.tokens)}
            print("(b) streaming vs blocking (echo):", json.dumps(out["streaming"]), flush=True)
            out["gateway"] = await gateway_overhead(stub, gateway, sample, args.tokens)
            print("(c) gateway:", json.dumps(out["gateway"]), flush=True)
        if args.streams:
            out["held_streams"] = await held_streams(
                llm, rag, args.streams, queries, args.stream_tokens, args.rag_stream_tokens
            )
            for name, s in out["held_streams"].items():
                print(f"(d) {args.streams} streams via {name}:", loadgen.render(s), flush=True)
        gateway.stop()
        rag.stop()
        llm.stop()
        if args.embedded:
            llm = spawn_llm("embedded", 0.0, logs)
            stack.callback(llm.stop)
            rag = spawn_rag(llm, store, logs)
            stack.callback(rag.stop)
            async with grpc.aio.insecure_channel(rag.target) as channel:
                stub = pb_grpc.RagServiceStub(channel)
                await answer_stream(stub, request(queries[-1], False, 4))  # warm-up (load, first prefill)
                # questions not used by the echo runs above, so that no prompt is in llama.cpp's cache
                out["streaming"]["embedded"] = await streaming_vs_blocking(
                    stub, queries[-1 - args.embedded : -1], args.embedded_tokens
                )
            print("(e) streaming vs blocking (embedded):", json.dumps(out["streaming"]["embedded"]), flush=True)
    return out


if __name__ == "__main__":
    result = asyncio.run(run(build_parser().parse_args()))
    print(json.dumps(result, indent=2))
