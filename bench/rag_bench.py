"""RAG service benchmark: embedding ceiling, Retrieve throughput and latency, and the RAG's time-to-first-token cost.

Runs, in one go and on the same machine (the services as processes, this process the client):
  (a) raw batched embedding: Embedder.embed of batches of 32 single queries in a loop, in this process:
      queries/s, the ceiling of any Retrieve rate (each Retrieve embeds one query);
  (b) Retrieve over gRPC at 1, 8, 32 and 64 concurrent clients (each loops Retrieve for --duration seconds;
      expansion off, self-query on with questions that take its fast path, MMR rerank), with the embedder's
      cross-request batching ON and OFF (RAG_EMBEDDING_BATCHING), compared with (a) measured in this run;
  (c) the RAG's own share of time to first token: TTFT of AnswerStream seen by the client (expansion and
      self-query off) minus the LLM's TTFT for the same prompt, measured by calling the LLM service's
      GenerateStream directly with that prompt (rebuilt from the context event with the service's own
      template). With the echo backend (no token delay) the LLM's TTFT is ~0; with the embedded model it
      is the prompt's prefill. The direct prompt's first letter is lowercased so that llama.cpp's prompt
      cache cannot serve it from the RAG call that just ran (same length within a token; checked).

  (d) the embedding runtimes (RAG_EMBEDDING_RUNTIME: torch, onnx, onnx-int8) side by side: raw rate and
      Retrieve at 32 clients, each on a fresh RAG service over the same store.

    .venv/bin/python bench/rag_bench.py [--duration 5] [--levels 1,8,32,64] [--answers 40]
        [--embedded-answers 8] [--llm-threads 1] [--skip-embedded] [--runtimes torch,onnx]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import grpc
from common.data import corpus_documents, question_rows
from common.paths import logs_dir
from common.procfs import cpu_seconds
from common.services import Service, ingest_documents, spawn
from common.stats import percentile
from rag_ttft import TTFT_HEADER, Ttft, measure_ttft, print_ttft, ttft_summary

from llmtwin.rag.v1 import rag_service_pb2 as pb
from llmtwin.rag.v1 import rag_service_pb2_grpc as pb_grpc
from rag_service.pipeline.self_query import match_author, mentions_a_name
from rag_service.types import Author

BATCH = 32


def spawn_llm(backend: str, logs: Path, threads: int) -> Service:
    """The LLM service: echo with no token delay, or the embedded model."""
    env = {"LLM_BACKEND": backend, "LLM_ECHO_TOKEN_DELAY_S": "0", "LLM_MAX_CONCURRENT": "32"}
    env |= {"LLM_MAX_QUEUED": "64", "LLM_LOG_LEVEL": "WARNING", "LLM_N_THREADS": str(threads)}
    return spawn("llm_service", env, logs / f"rag-bench-llm-{backend}.log")


def spawn_rag(llm: Service, store: str, batching: bool, logs: Path, runtime: str = "onnx") -> Service:
    """The RAG service on the embedded edge store at `store`, tracing off, embeddings on `runtime`."""
    env = {
        "RAG_EMBEDDING_RUNTIME": runtime,
        "RAG_LLM_TARGET": llm.target,
        "RAG_STORE_BACKEND": "edge",
        "RAG_QDRANT_PATH": store,
        "RAG_EMBEDDING_BATCHING": str(batching).lower(),
        "RAG_TRACING": "false",
        "RAG_CONTEXT_TOKENS": "0",
        "RAG_LOG_LEVEL": "WARNING",
        "OPIK_TRACK_DISABLE": "true",
    }
    return spawn("rag_service", env, logs / f"rag-bench-rag-{'on' if batching else 'off'}-{runtime}.log")


def fast_path_queries(questions: list[dict[str, str]], authors: list[Author]) -> list[str]:
    """Questions whose self-query resolves without the LLM (a name match, or no capitalized name at all)."""
    return [
        q["question"] for q in questions if match_author(q["question"], authors) or not mentions_a_name(q["question"])
    ]


# ---- (a) the embedding ceiling ---------------------------------------------------------------------


async def raw_embedding_rate(queries: list[str], duration: float, runtime: str = "onnx") -> float:
    """Queries/s of Embedder.embed on batches of 32 single queries, one thread, no other load from us."""
    from rag_service.embedding import Embedder

    embedder = await Embedder.open(threads=1, batching=False, max_batch=BATCH, runtime=runtime)
    try:
        batches = [[queries[(i + j) % len(queries)] for j in range(BATCH)] for i in range(len(queries))]
        for batch in batches[:3]:
            await embedder.embed(batch)  # warm-up
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < duration:
            await embedder.embed(batches[done // BATCH % len(batches)])
            done += BATCH
        return done / (time.perf_counter() - start)
    finally:
        await embedder.aclose()


# ---- (b) Retrieve under concurrency ----------------------------------------------------------------


@dataclass
class Level:
    """What one concurrency level measured."""

    clients: int
    requests: int
    errors: int
    rate: float
    p50_ms: float
    p99_ms: float
    server_cpu_ms: float
    client_cpu_ms: float


async def retrieve_level(rag: Service, queries: list[str], clients: int, duration: float) -> Level:
    """`clients` loops of Retrieve for `duration` seconds on one shared channel."""
    options = pb.RetrievalOptions(expand_queries=0, self_query=True, rerank=True)
    latencies: list[float] = []
    errors = 0
    async with grpc.aio.insecure_channel(rag.target) as channel:
        stub = pb_grpc.RagServiceStub(channel)
        for q in queries[:4]:  # warm-up
            await stub.Retrieve(pb.RetrieveRequest(query=q, options=options))

        async def client(c: int, end: float) -> None:
            nonlocal errors
            i = c * 7
            while time.perf_counter() < end:
                request = pb.RetrieveRequest(query=queries[i % len(queries)], options=options)
                i += 1
                t0 = time.perf_counter()
                try:
                    await stub.Retrieve(request, timeout=10)
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - t0)

        cpu0, own0 = cpu_seconds(rag.proc.pid), time.process_time()
        start = time.perf_counter()
        await asyncio.gather(*(client(c, start + duration) for c in range(clients)))
        wall = time.perf_counter() - start
        cpu, own = cpu_seconds(rag.proc.pid) - cpu0, time.process_time() - own0
    n = len(latencies)
    return Level(
        clients=clients,
        requests=n,
        errors=errors,
        rate=n / wall,
        p50_ms=1000 * percentile(latencies, 50),
        p99_ms=1000 * percentile(latencies, 99),
        server_cpu_ms=1000 * cpu / max(n, 1),
        client_cpu_ms=1000 * own / max(n, 1),
    )


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per concurrency level")
    parser.add_argument("--levels", default="1,8,32,64")
    parser.add_argument("--answers", type=int, default=40, help="AnswerStreams measured with the echo LLM")
    parser.add_argument("--embedded-answers", type=int, default=8, help="AnswerStreams with the embedded LLM")
    parser.add_argument("--llm-threads", type=int, default=1, help="LLM_N_THREADS of the embedded LLM")
    parser.add_argument("--skip-embedded", action="store_true")
    parser.add_argument(
        "--runtimes", default="torch,onnx", help="(d): embedding runtimes compared at 32 clients (first: the base)"
    )
    return parser


async def compare_runtimes(
    llm: Service, store: str, logs: Path, runtimes: list[str], queries: list[str], duration: float
) -> dict[str, dict[str, float]]:
    """(d) The embedding runtimes side by side: raw rate, and Retrieve at 32 clients (batching on)."""
    print("\n(d) embedding runtimes (RAG_EMBEDDING_RUNTIME), Retrieve at 32 clients, batching on")
    print(f"{'runtime':<10} {'raw q/s':>8} {'q/s':>7} {'vs base':>8} {'p50 ms':>7} {'p99 ms':>7}", flush=True)
    figures: dict[str, dict[str, float]] = {}
    for runtime in runtimes:
        raw = await raw_embedding_rate(queries, duration, runtime)
        rag = spawn_rag(llm, store, True, logs, runtime)
        try:
            level = await retrieve_level(rag, queries, 32, duration)
        finally:
            rag.stop()
        figures[runtime] = {"raw_rate": raw, "rate": level.rate, "p50_ms": level.p50_ms, "p99_ms": level.p99_ms}
        base = figures[runtimes[0]]["rate"]
        print(
            f"{runtime:<10} {raw:>8.0f} {level.rate:>7.1f} {level.rate / base:>7.2f}x {level.p50_ms:>7.1f} "
            f"{level.p99_ms:>7.1f}",
            flush=True,
        )
    return figures


async def run(args: argparse.Namespace) -> dict[str, object]:
    """Runs (a), (b) and (c), prints the tables and returns the figures."""
    levels = [int(x) for x in args.levels.split(",")]
    logs = logs_dir()
    questions = question_rows()
    documents = corpus_documents()
    authors = list({d.author_id: Author(d.author_id, d.author_full_name) for d in documents}.values())
    queries = fast_path_queries(questions, authors)
    all_queries = [q["question"] for q in questions]
    began = time.perf_counter()

    with ExitStack() as stack:
        store = stack.enter_context(tempfile.TemporaryDirectory(prefix="rag-bench-"))
        llm = spawn_llm("echo", logs, 1)
        stack.callback(llm.stop)
        rag = spawn_rag(llm, store, True, logs)
        stack.callback(rag.stop)
        t0 = time.perf_counter()
        report = await ingest_documents(rag.target, documents)
        print(
            f"corpus: {report.documents_written} documents, {report.chunks_written} chunks ingested over gRPC "
            f"in {time.perf_counter() - t0:.1f} s; {len(queries)} of {len(all_queries)} questions take "
            f"self-query's fast path (used for b)\n",
            flush=True,
        )

        raw = await raw_embedding_rate(all_queries, args.duration)
        print(f"(a) raw batched embedding (Embedder.embed, batches of {BATCH}, 1 thread): {raw:.0f} queries/s\n")

        print("(b) Retrieve over gRPC: expansion off, self-query on (fast path), rerank mmr, top_k 3")
        print(
            f"{'batching':<9} {'clients':>7} {'requests':>8} {'err':>4} {'q/s':>7} {'vs raw':>7} {'p50 ms':>7} "
            f"{'p99 ms':>7} {'srv cpu':>8} {'cli cpu':>8}\n{'':<51}{'(ms/q)':>8} {'(ms/q)':>8}",
            flush=True,
        )
        results: dict[bool, dict[int, Level]] = {}
        ttfts: dict[str, list[Ttft]] = {}
        for batching in (True, False):
            if not batching:
                rag.stop()
                rag = spawn_rag(llm, store, False, logs)
                stack.callback(rag.stop)
            results[batching] = {}
            for clients in levels:
                r = await retrieve_level(rag, queries, clients, args.duration)
                results[batching][clients] = r
                print(
                    f"{'on' if batching else 'off':<9} {clients:>7} {r.requests:>8} {r.errors:>4} {r.rate:>7.1f} "
                    f"{r.rate / raw:>6.2f}x {r.p50_ms:>7.1f} {r.p99_ms:>7.1f} {r.server_cpu_ms:>8.2f} "
                    f"{r.client_cpu_ms:>8.2f}",
                    flush=True,
                )
            if batching:  # (c) with the echo LLM, on the service as it runs by default
                ttfts["echo"] = await measure_ttft(rag, llm, all_queries, args.answers, warmup=2)
        rag.stop()
        runtimes = await compare_runtimes(llm, store, logs, args.runtimes.split(","), queries, args.duration)
        llm.stop()
        if not args.skip_embedded:
            llm = spawn_llm("embedded", logs, args.llm_threads)
            stack.callback(llm.stop)
            rag = spawn_rag(llm, store, True, logs)
            stack.callback(rag.stop)
            ttfts[f"embedded/{args.llm_threads}t"] = await measure_ttft(
                rag, llm, all_queries, args.embedded_answers, warmup=1
            )

    print("\n(c) the RAG's share of time to first token (AnswerStream: expansion and self-query off, rerank mmr)")
    print(TTFT_HEADER)
    for name, measured in ttfts.items():
        print_ttft(name, measured)
    top = 32 if 32 in levels else max(levels)  # the target is set at 32 clients
    on, off = results[True][top], results[False][top]
    print(
        f"\nat {top} clients: batching on {on.rate:.0f} q/s = {on.rate / raw:.2f}x the raw rate (goal >= 0.7x), "
        f"p99 {on.p99_ms:.0f} ms (goal <= 150 ms); batching off {off.rate:.0f} q/s = {off.rate / raw:.2f}x, "
        f"p99 {off.p99_ms:.0f} ms.\nLittle's law: {top} requests always in flight at the raw rate alone mean "
        f"{1000 * top / raw:.0f} ms per request on average; a p99 of 150 ms at {top} clients needs "
        f">= {top / 0.150:.0f} q/s."
        "\n(b): q/s counts completed Retrieves over the level's wall time; srv/cli cpu: CPU time of the RAG process"
        "\n/ of this client process per request (both share the machine's 2 cores with the LLM and others)."
        "\n(c): ans: client-side TTFT of AnswerStream; rag-seen: the RAG final's time_to_first_token_s; llm p50:"
        "\nclient-side TTFT of GenerateStream sent straight to the LLM service with the same prompt; llm own: the"
        "\nLLM final's time_to_first_token_s; ovh = ans - llm p50 per request: the RAG's share of the first token."
        f"\nTotal {time.perf_counter() - began:.0f} s."
    )
    return {
        "raw_rate": raw,
        "retrieve": {
            "on" if b else "off": {c: dataclasses.asdict(r) for c, r in levels_.items()}
            for b, levels_ in results.items()
        },
        "ttft": {name: ttft_summary(measured) for name, measured in ttfts.items()},
        "runtimes": runtimes,
    }


async def main() -> int:
    """Runs the benchmark from the command line."""
    await run(build_parser().parse_args())
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
