"""A gRPC load client of our own with ghz's summary, plus time to first message for streams.

ghz measures a server-streaming call as a whole; what a streaming user feels is the first message. This client
prints ghz's summary (count, total, slowest/fastest/average, requests/s, latency distribution, status code
distribution) and, for streams, time to first message and the most streams open at once. It works against
any running rag_service or llm_service address (loopback or not), with the request given as JSON like
ghz's `-d`.

    .venv/bin/python bench/loadgen.py --call rag.Retrieve --target 127.0.0.1:50051 -c 32 -z 10
    .venv/bin/python bench/loadgen.py --call rag.AnswerStream -c 8 -n 64 -d '{"query": "What is RAG?"}'
    .venv/bin/python bench/loadgen.py --call llm.GenerateStream --target 127.0.0.1:50052 -c 200 -n 200 \
        -d '{"prompt": "a b c", "parameters": {"max_new_tokens": 100}}' --json
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from common.stats import percentile
from google.protobuf import json_format

from llmtwin.llm.v1 import llm_service_pb2 as llm_pb
from llmtwin.llm.v1 import llm_service_pb2_grpc as llm_grpc
from llmtwin.rag.v1 import rag_service_pb2 as rag_pb
from llmtwin.rag.v1 import rag_service_pb2_grpc as rag_grpc

# call name -> (stub class, method, request class, streaming, default request JSON, default target)
CALLS: dict[str, tuple[Any, str, Any, bool, dict[str, Any], str]] = {
    "rag.Retrieve": (rag_grpc.RagServiceStub, "Retrieve", rag_pb.RetrieveRequest, False,
                     {"query": "How do I build a feature pipeline?"}, "127.0.0.1:50051"),
    "rag.Answer": (rag_grpc.RagServiceStub, "Answer", rag_pb.AnswerRequest, False,
                   {"query": "How do I build a feature pipeline?"}, "127.0.0.1:50051"),
    "rag.AnswerStream": (rag_grpc.RagServiceStub, "AnswerStream", rag_pb.AnswerRequest, True,
                         {"query": "How do I build a feature pipeline?"}, "127.0.0.1:50051"),
    "llm.Generate": (llm_grpc.LlmServiceStub, "Generate", llm_pb.GenerateRequest, False,
                     {"prompt": "The quick brown fox", "parameters": {"max_new_tokens": 64}}, "127.0.0.1:50052"),
    "llm.GenerateStream": (llm_grpc.LlmServiceStub, "GenerateStream", llm_pb.GenerateRequest, True,
                           {"prompt": "The quick brown fox", "parameters": {"max_new_tokens": 64}}, "127.0.0.1:50052"),
}  # fmt: skip


@dataclass
class Report:
    """What one load run measured; times in seconds."""

    call: str
    concurrency: int
    count: int = 0
    total_s: float = 0.0
    latencies: list[float] = field(default_factory=list)  # OK calls only, like ghz's distribution
    first_message: list[float] = field(default_factory=list)  # streams: time to the first message
    messages: int = 0
    statuses: collections.Counter[str] = field(default_factory=collections.Counter)
    peak_open_streams: int = 0

    @property
    def errors(self) -> int:
        """Calls that did not end OK."""
        return self.count - self.statuses.get("OK", 0)

    def summary(self) -> dict[str, Any]:
        """ghz's summary fields (milliseconds), plus time to first message; JSON-friendly."""
        ms = [1000 * x for x in self.latencies]
        ttfm = [1000 * x for x in self.first_message]
        out: dict[str, Any] = {
            "call": self.call,
            "concurrency": self.concurrency,
            "count": self.count,
            "total_s": round(self.total_s, 3),
            "slowest_ms": max(ms, default=0.0),
            "fastest_ms": min(ms, default=0.0),
            "average_ms": statistics.fmean(ms) if ms else 0.0,
            "rps": self.count / self.total_s if self.total_s else 0.0,
            "latency_ms": {f"p{p}": percentile(ms, p) for p in (10, 25, 50, 75, 90, 95, 99)},
            "status_codes": dict(self.statuses),
            "errors": self.errors,
        }
        if self.first_message:
            out["first_message_ms"] = {f"p{p}": percentile(ttfm, p) for p in (50, 90, 99)}
            out["messages"] = self.messages
            out["peak_open_streams"] = self.peak_open_streams
        return out


def render(s: dict[str, Any]) -> str:
    """The summary laid out as ghz prints it."""
    lines = [
        "",
        "Summary:",
        f"  Count:\t{s['count']}",
        f"  Total:\t{1000 * s['total_s']:.2f} ms",
        f"  Slowest:\t{s['slowest_ms']:.2f} ms",
        f"  Fastest:\t{s['fastest_ms']:.2f} ms",
        f"  Average:\t{s['average_ms']:.2f} ms",
        f"  Requests/sec:\t{s['rps']:.2f}",
        "",
        "Latency distribution:",
        *(f"  {p[1:]} % in {v:.2f} ms " for p, v in s["latency_ms"].items()),
    ]
    if "first_message_ms" in s:
        lines += ["", "Time to first message (streams):"]
        lines += [f"  {p[1:]} % in {v:.2f} ms " for p, v in s["first_message_ms"].items()]
        lines += [f"  Messages:\t{s['messages']}", f"  Peak open:\t{s['peak_open_streams']} streams"]
    lines += ["", "Status code distribution:"]
    lines += [f"  [{code}]\t{n} responses" for code, n in sorted(s["status_codes"].items())]
    return "\n".join(lines)


async def load(
    target: str,
    call: str,
    requests: Callable[[int], Any] | Any,
    *,
    concurrency: int,
    total: int = 0,
    duration: float = 0.0,
    timeout: float = 60.0,
    metadata: Sequence[tuple[str, str]] = (),
) -> Report:
    """Runs `concurrency` workers over one channel until `total` calls were started or `duration` passed.

    `requests` is one request message, or a function of the call's index that returns one (to vary queries).
    """
    stub_cls, method_name, _, streaming, _, _ = CALLS[call]
    report = Report(call, concurrency)
    make = requests if callable(requests) else (lambda _i: requests)
    started = 0
    open_streams = 0
    options = [("grpc.max_concurrent_streams", 0)]
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        method = getattr(stub_cls(channel), method_name)
        start = time.perf_counter()
        end = start + duration if duration else float("inf")

        async def one(request: Any) -> None:
            nonlocal open_streams
            t0 = time.perf_counter()
            code = "OK"
            try:
                if streaming:
                    first = True
                    try:
                        async for _ in method(request, timeout=timeout, metadata=metadata or None):
                            if first:
                                report.first_message.append(time.perf_counter() - t0)
                                open_streams += 1
                                report.peak_open_streams = max(report.peak_open_streams, open_streams)
                                first = False
                            report.messages += 1
                    finally:
                        if not first:
                            open_streams -= 1
                else:
                    await method(request, timeout=timeout, metadata=metadata or None)
            except grpc.aio.AioRpcError as e:
                code = e.code().name
            report.statuses[code] += 1
            report.count += 1
            if code == "OK":
                report.latencies.append(time.perf_counter() - t0)

        async def worker() -> None:
            nonlocal started
            while (not total or started < total) and time.perf_counter() < end:
                i = started
                started += 1
                await one(make(i))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        report.total_s = time.perf_counter() - start
    return report


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """ghz-like flags."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--call", choices=sorted(CALLS), default="rag.Retrieve")
    parser.add_argument("--target", help="host:port (default: the service's default address)")
    parser.add_argument("-c", "--concurrency", type=int, default=50, help="workers (calls in flight)")
    parser.add_argument("-n", "--total", type=int, default=200, help="calls in all (0: until --duration)")
    parser.add_argument("-z", "--duration", type=float, default=0.0, help="seconds to run (0: until --total)")
    parser.add_argument("-d", "--data", help="the request as JSON (proto field names)")
    parser.add_argument("-t", "--timeout", type=float, default=60.0, help="deadline of each call, seconds")
    parser.add_argument("--token", help="bearer token sent as authorization metadata")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON instead")
    return parser.parse_args(argv)


async def main(argv: Sequence[str] | None = None) -> int:
    """Runs one load and prints its summary; exit 1 when any call failed."""
    args = parse_args(argv)
    _, _, request_cls, _, default, default_target = CALLS[args.call]
    request = json_format.ParseDict(json.loads(args.data) if args.data else default, request_cls())
    metadata = [("authorization", f"Bearer {args.token}")] if args.token else []
    report = await load(
        args.target or default_target,
        args.call,
        request,
        concurrency=args.concurrency,
        total=args.total if not args.duration else 0,
        duration=args.duration,
        timeout=args.timeout,
        metadata=metadata,
    )
    summary = report.summary()
    print(json.dumps(summary, indent=2) if args.json else render(summary))
    return 1 if report.errors else 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
