"""Serving logic under the gRPC layer: limits, admission, timing, metrics and the per-request log line."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass

from llm_service import metrics
from llm_service.backends.base import Backend
from llm_service.errors import InvalidArgument, Overloaded, ServiceError
from llm_service.types import Completion, Request, Token
from servekit.admission import Admission

log = logging.getLogger("llm_service.requests")


@dataclass(slots=True)
class Finished:
    """The end of a served generation: the backend's completion plus the service's own timings."""

    completion: Completion
    ttft_s: float
    total_s: float
    queue_s: float


class Generator:
    """Runs generations on a backend within the token limits and the admission limit."""

    def __init__(self, backend: Backend, admission: Admission):
        self.backend = backend
        self.admission = admission

    async def check_limits(self, request: Request) -> int:
        """The prompt's token count; InvalidArgument when it or prompt + max_new_tokens exceed the model."""
        info = self.backend.info()
        field = "prompt" if request.input.prompt is not None else "messages"
        n = await self.backend.count_tokens(request.input)
        if n > info.max_input_tokens:
            raise InvalidArgument({field: f"{n} tokens exceeds the model's input limit of {info.max_input_tokens}"})
        if n + request.parameters.max_new_tokens > info.max_total_tokens:
            raise InvalidArgument(
                {
                    "parameters.max_new_tokens": f"{n} prompt tokens + {request.parameters.max_new_tokens} new tokens "
                    f"exceeds the model's total limit of {info.max_total_tokens}"
                }
            )
        return n

    async def stream(self, request: Request) -> AsyncGenerator[Token | Finished, None]:
        """Yields tokens, then one Finished. Closing the iterator stops the backend's generation."""
        start = time.perf_counter()
        status = "OK"
        ttft = 0.0
        completion: Completion | None = None
        queue_s = 0.0
        finished = False
        try:
            await self.check_limits(request)
            async with self.admission.slot() as queue_s:
                metrics.QUEUE_TIME.observe(queue_s)
                last = 0.0
                async with aclosing(self.backend.generate(request)) as events:
                    async for event in events:
                        now = time.perf_counter()
                        if isinstance(event, Completion):
                            completion = event
                            break
                        if not last:
                            ttft = now - start
                            metrics.TTFT.observe(ttft)
                        else:
                            metrics.ITL.observe(now - last)
                        last = now
                        yield event
            if completion is None:
                raise ServiceError("the backend ended without a final result")
            total = time.perf_counter() - start
            metrics.DURATION.observe(total)
            metrics.PROMPT_TOKENS.inc(completion.prompt_tokens)
            metrics.GENERATED_TOKENS.inc(completion.completion_tokens)
            finished = True  # closing the iterator after the final message is not a cancellation
            yield Finished(completion, ttft or total, total, queue_s)
        except ServiceError as exc:
            status = exc.code.name
            if not isinstance(exc, InvalidArgument | Overloaded):
                metrics.BACKEND_ERRORS.labels(exc.reason).inc()
            raise
        except (asyncio.CancelledError, GeneratorExit):
            status = "OK" if finished else "CANCELLED"
            raise
        except Exception:
            status = "INTERNAL"
            raise
        finally:
            log.info(
                "generation",
                extra={
                    "backend": self.backend.info().backend,
                    "adapter": request.adapter or None,
                    "status": status,
                    "prompt_tokens": completion.prompt_tokens if completion else None,
                    "completion_tokens": completion.completion_tokens if completion else None,
                    "finish_reason": completion.finish_reason.name if completion else None,
                    "ttft_s": round(ttft, 4),
                    "queue_s": round(queue_s, 4),
                    "duration_s": round(time.perf_counter() - start, 4),
                },
            )
