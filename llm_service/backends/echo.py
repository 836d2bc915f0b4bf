"""Echo backend for tests and benchmarks: emits tokens as fast as it can, so what is measured is our relay."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from llm_service.errors import BackendError
from llm_service.stops import StopMatcher
from llm_service.types import Completion, FinishReason, GenerationInput, ModelInfo, Request, Token


class EchoBackend:
    """Repeats the words of the input, cycling, until max_new_tokens; one word per token."""

    def __init__(
        self,
        *,
        token_delay_s: float = 0.0,
        max_input_tokens: int = 1536,
        max_total_tokens: int = 2048,
        adapters: tuple[str, ...] = (),
    ):
        self._delay = token_delay_s
        self.fail_after: int | None = None  # raise BackendError after this many tokens (tests of error paths)
        # `adapters`: LoRA adapter names it claims to serve (the output does not change with them).
        self._info = ModelInfo("echo", "echo", max_input_tokens, max_total_tokens, adapters=tuple(adapters))
        self.produced = 0  # tokens produced since start: lets tests see that a cancel stopped generation
        self.adapters_used: list[str] = []  # the adapter of each generation, in order ("": the base model)

    async def start(self) -> None:
        """Nothing to load."""

    def info(self) -> ModelInfo:
        """The echo model's limits."""
        return self._info

    async def check_health(self) -> bool:
        """Always healthy."""
        return True

    async def count_tokens(self, input: GenerationInput) -> int:
        """One token per whitespace-separated word."""
        return len(_words(input))

    async def generate(self, request: Request) -> AsyncGenerator[Token | Completion, None]:
        """Yields the input's words cyclically; yields to the loop between tokens even without delay."""
        self.adapters_used.append(request.adapter)
        words = _words(request.input) or ["echo"]
        matcher = StopMatcher(request.parameters.stop_sequences)
        out: list[str] = []
        finish = FinishReason.LENGTH
        n = 0
        for n in range(1, request.parameters.max_new_tokens + 1):
            if self._delay:
                await asyncio.sleep(self._delay)
            elif n % 16 == 0:
                await asyncio.sleep(0)
            if self.fail_after is not None and n > self.fail_after:
                raise BackendError("echo failed on purpose (fail_after)")
            self.produced += 1
            text = matcher.feed(words[(n - 1) % len(words)] + " ")
            if text:
                out.append(text)
                yield Token(text, token_id=n)
            if matcher.stopped:
                finish = FinishReason.STOP_SEQUENCE
                break
        if not matcher.stopped and (rest := matcher.flush()):  # the start of a stop sequence that never came
            out.append(rest)
            yield Token(rest)
        yield Completion(finish, len(words), n, "".join(out))

    async def aclose(self) -> None:
        """Nothing to release."""


def _words(input: GenerationInput) -> list[str]:
    if input.prompt is not None:
        return input.prompt.split()
    return [w for m in input.messages or () for w in m.content.split()]
