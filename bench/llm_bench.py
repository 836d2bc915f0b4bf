"""LLM service benchmark: TTFT, inter-token latency and tokens/s at 1, 8 and 32 concurrent streams.

Runs, in one go and on the same machine:
  - a bare grpc.aio server-streaming loop (the reference ceiling of any relay in Python),
  - the LLM service with the echo backend (tokens as fast as it can: isolates our relay cost),
  - the LLM service with the embedded model (real CPU generation).
Each server runs in its own process; this process is the client. Server CPU time is read from /proc.

    .venv/bin/python bench/llm_bench.py [--tokens 2000] [--embedded-tokens 64] [--target HOST:PORT]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path

import grpc
from common.paths import logs_dir
from common.procfs import cpu_seconds
from common.services import Service, spawn

from llmtwin.llm.v1 import llm_service_pb2 as pb
from llmtwin.llm.v1 import llm_service_pb2_grpc as pb_grpc
from tests.support.procs import free_port

REF_METHOD = "/bench.Ref/Stream"


async def serve_reference(port: int) -> None:
    """A bare grpc.aio server streaming GenerateStreamResponse token messages as fast as it can."""

    async def stream(request: bytes, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]
        n = int(request.decode())
        for i in range(n):
            yield pb.GenerateStreamResponse(token=pb.TokenChunk(text="tok ", index=i))
        yield pb.GenerateStreamResponse(final=pb.GenerationResult(text="done"))

    handler = grpc.unary_stream_rpc_method_handler(
        stream, request_deserializer=lambda b: b, response_serializer=pb.GenerateStreamResponse.SerializeToString
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Ref", {"Stream": handler}),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


async def one_stream(call_factory) -> tuple[float, list[float], int]:  # type: ignore[no-untyped-def]
    """TTFT, inter-token gaps and token count of one stream."""
    start = time.perf_counter()
    last, ttft, gaps, n = 0.0, 0.0, [], 0
    async for message in call_factory():
        now = time.perf_counter()
        if message.HasField("final"):
            break
        if not last:
            ttft = now - start
        else:
            gaps.append(now - last)
        last, n = now, n + 1
    return ttft, gaps, n


async def run_level(call_factory, concurrency: int, pid: int | None) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Runs `concurrency` streams at once; returns latency percentiles and throughput."""
    cpu0 = cpu_seconds(pid) if pid else 0.0
    start = time.perf_counter()
    results = await asyncio.gather(*(one_stream(call_factory) for _ in range(concurrency)))
    wall = time.perf_counter() - start
    cpu = (cpu_seconds(pid) - cpu0) if pid else 0.0
    ttfts = sorted(r[0] for r in results)
    gaps = sorted(g for r in results for g in r[1])
    tokens = sum(r[2] for r in results)
    return {
        "ttft_p50_ms": 1000 * statistics.median(ttfts),
        "ttft_p99_ms": 1000 * ttfts[min(len(ttfts) - 1, int(0.99 * len(ttfts)))],
        "itl_p50_us": 1e6 * statistics.median(gaps) if gaps else 0.0,
        "itl_p99_us": 1e6 * gaps[int(0.99 * (len(gaps) - 1))] if gaps else 0.0,
        "tok_s": tokens / wall,
        "tok_per_cpu_s": tokens / cpu if cpu else 0.0,
    }


def print_row(name: str, level: int, r: dict[str, float]) -> None:
    """One table row."""
    print(
        f"{name:<10} {level:>4} {r['ttft_p50_ms']:>9.2f} {r['ttft_p99_ms']:>9.2f} {r['itl_p50_us']:>9.1f} "
        f"{r['itl_p99_us']:>9.1f} {r['tok_s']:>10.0f} {r['tok_per_cpu_s']:>11.0f}",
        flush=True,
    )


async def bench_llm(target: str, pid: int | None, name: str, tokens: int, levels: list[int]) -> dict[int, dict]:
    """Benchmarks GenerateStream on a running LLM service."""
    out = {}
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.LlmServiceStub(channel)
        request = pb.GenerateRequest(
            prompt="The quick brown fox jumps over the lazy dog",
            parameters=pb.GenerationParameters(max_new_tokens=tokens, temperature=0.7),
        )
        await one_stream(lambda: stub.GenerateStream(request))  # warm-up
        for level in levels:
            out[level] = await run_level(lambda: stub.GenerateStream(request), level, pid)
            print_row(name, level, out[level])
    return out


async def bench_reference(port: int, pid: int, tokens: int, levels: list[int]) -> dict[int, dict]:
    """Benchmarks the bare grpc.aio streaming loop."""
    out = {}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        method = channel.unary_stream(
            REF_METHOD, request_serializer=lambda b: b, response_deserializer=pb.GenerateStreamResponse.FromString
        )
        for _ in range(50):
            try:
                await one_stream(lambda: method(b"10"))
                break
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.1)
        for level in levels:
            out[level] = await run_level(lambda: method(str(tokens).encode()), level, pid)
            print_row("reference", level, out[level])
    return out


def spawn_llm(backend: str, logs: Path) -> Service:
    """Starts the LLM service with a backend, once it serves."""
    env = {"LLM_BACKEND": backend, "LLM_MAX_CONCURRENT": "32", "LLM_MAX_QUEUED": "64", "LLM_LOG_LEVEL": "WARNING"}
    return spawn("llm_service", env, logs / f"llm-{backend}.log")


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=2000, help="tokens per stream for echo and the reference")
    parser.add_argument("--embedded-tokens", type=int, default=64)
    parser.add_argument("--levels", default="1,8,32")
    parser.add_argument("--target", help="benchmark an already running LLM service instead (its own backend)")
    parser.add_argument("--skip-embedded", action="store_true")
    return parser


async def run(args: argparse.Namespace) -> dict[str, dict[int, dict]]:
    """Runs the whole benchmark, prints the comparison and returns the figures per server and level."""
    levels = [int(x) for x in args.levels.split(",")]
    logs = logs_dir()
    print(
        f"{'server':<10} {'conc':>4} {'ttft p50':>9} {'ttft p99':>9} {'itl p50':>9} {'itl p99':>9} "
        f"{'tok/s':>10} {'tok/cpu-s':>11}\n{'':<15}{'(ms)':>9} {'(ms)':>9} {'(us)':>9} {'(us)':>9}"
    )
    if args.target:
        return {"target": await bench_llm(args.target, None, "target", args.tokens, levels)}
    out: dict[str, dict[int, dict]] = {}
    ref_port = free_port()
    ref = Service(subprocess.Popen([sys.executable, __file__, "--serve-reference", str(ref_port)]), "")
    services = [ref]
    try:
        out["reference"] = reference = await bench_reference(ref_port, ref.proc.pid, args.tokens, levels)
        ref.stop()
        echo = spawn_llm("echo", logs)
        services.append(echo)
        out["echo"] = ours = await bench_llm(echo.target, echo.proc.pid, "echo", args.tokens, levels)
        echo.stop()
        if not args.skip_embedded:
            emb = spawn_llm("embedded", logs)
            services.append(emb)
            out["embedded"] = await bench_llm(emb.target, emb.proc.pid, "embedded", args.embedded_tokens, levels)
        print("\necho relay vs bare grpc.aio loop (server CPU-bound rate, same run):")
        for level in levels:
            ratio = ours[level]["tok_per_cpu_s"] / reference[level]["tok_per_cpu_s"]
            added = 1e6 / ours[level]["tok_per_cpu_s"] - 1e6 / reference[level]["tok_per_cpu_s"]
            wall_ratio = ours[level]["tok_s"] / reference[level]["tok_s"]
            print(
                f"  {level:>2} streams: {ratio:.2f}x tokens per CPU-second, {wall_ratio:.2f}x tokens/s, "
                f"+{added:.1f} us CPU per token, ITL p99 {ours[level]['itl_p99_us']:.0f} us "
                f"(reference {reference[level]['itl_p99_us']:.0f} us)"
            )
    finally:
        for service in services:
            service.stop()
    return out


async def main() -> None:
    """Runs the benchmark from the command line."""
    await run(build_parser().parse_args())


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve-reference":
        asyncio.run(serve_reference(int(sys.argv[2])))
    else:
        asyncio.run(main())
