"""The soak's traffic: closed-loop workers of four kinds against a running stack, one Sample per request."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
from common.data import question_rows
from soak_stack import Stack

from llmtwin.llm.v1 import llm_service_pb2 as llm_pb
from llmtwin.rag.v1 import rag_service_pb2 as pb
from llmtwin.rag.v1 import rag_service_pb2_grpc as pb_grpc

KINDS = ("answer_stream", "answer", "retrieve", "sse")
CALL_TIMEOUT_S = 60.0


@dataclass(slots=True)
class Sample:
    """One finished request."""

    at: float  # seconds since the traffic started, when the request finished
    kind: str
    code: str  # "OK", a gRPC status name, or HTTP_<status>
    latency_s: float
    ttft_s: float | None = None


class Traffic:
    """Closed-loop workers of every kind; each appends a Sample per finished request."""

    def __init__(self, stack: Stack, max_new_tokens: int, seed: int) -> None:
        self.stack = stack
        self.samples: list[Sample] = []
        self.questions = [row["question"] for row in question_rows()]
        self.random = random.Random(seed)
        self.parameters = llm_pb.GenerationParameters(max_new_tokens=max_new_tokens)
        self.max_new_tokens = max_new_tokens
        self.start = 0.0

    def _request(self) -> pb.AnswerRequest:
        return pb.AnswerRequest(query=self.random.choice(self.questions), parameters=self.parameters)

    async def answer_stream(self, stub: pb_grpc.RagServiceStub, http: httpx.AsyncClient) -> tuple[str, float | None]:
        """One AnswerStream, read to the end."""
        t0, ttft, final = time.perf_counter(), None, False
        async for message in stub.AnswerStream(self._request(), timeout=CALL_TIMEOUT_S):
            if message.HasField("delta") and ttft is None:
                ttft = time.perf_counter() - t0
            final = final or message.HasField("final")
        return ("OK" if final else "STREAM_TRUNCATED"), ttft

    async def answer(self, stub: pb_grpc.RagServiceStub, http: httpx.AsyncClient) -> tuple[str, float | None]:
        """One unary Answer."""
        response = await stub.Answer(self._request(), timeout=CALL_TIMEOUT_S)
        # The answer's text, not its token count: a question about someone who is not an author in the store
        # is answered by the service itself, with no generation.
        return ("OK" if response.final.answer.strip() else "EMPTY_ANSWER"), None

    async def retrieve(self, stub: pb_grpc.RagServiceStub, http: httpx.AsyncClient) -> tuple[str, float | None]:
        """One Retrieve."""
        response = await stub.Retrieve(
            pb.RetrieveRequest(query=self.random.choice(self.questions)), timeout=CALL_TIMEOUT_S
        )
        return ("OK" if response.context.documents else "NO_CONTEXT"), None

    async def sse(self, stub: pb_grpc.RagServiceStub, http: httpx.AsyncClient) -> tuple[str, float | None]:
        """One gateway SSE answer, read to its `done` (or `error`) event."""
        body = {"query": self.random.choice(self.questions), "parameters": {"max_new_tokens": self.max_new_tokens}}
        t0, ttft, event = time.perf_counter(), None, ""
        async with http.stream("POST", "/v1/answer/stream", json=body) as response:
            if response.status_code != 200:
                await response.aread()
                return f"HTTP_{response.status_code}", None
            async for line in response.aiter_lines():
                if line.startswith("event:"):
                    event = line.partition(":")[2].strip()
                elif line.startswith("data:") and event == "delta" and ttft is None:
                    ttft = time.perf_counter() - t0
                elif line.startswith("data:") and event == "error":
                    return json.loads(line.partition(":")[2])["error"]["status"], ttft
                elif line.startswith("data:") and event == "done":
                    return "OK", ttft
        return "STREAM_TRUNCATED", ttft

    async def worker(self, kind: str, until: float) -> None:
        """Calls `kind` back to back until the monotonic time `until`."""
        call: Callable[[Any, Any], Coroutine[Any, Any, tuple[str, float | None]]] = getattr(self, kind)
        async with (
            grpc.aio.insecure_channel(self.stack.rag_target) as channel,
            httpx.AsyncClient(base_url=self.stack.gateway_url, timeout=CALL_TIMEOUT_S) as http,
        ):
            stub = pb_grpc.RagServiceStub(channel)
            while time.monotonic() < until:
                began = time.perf_counter()
                try:
                    code, ttft = await call(stub, http)
                except grpc.aio.AioRpcError as exc:
                    code, ttft = exc.code().name, None
                except httpx.HTTPError as exc:
                    code, ttft = f"HTTP_{type(exc).__name__}", None
                ended = time.perf_counter()
                self.samples.append(Sample(ended - self.start, kind, code, ended - began, ttft))
