"""The one interface every backend implements."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Protocol, runtime_checkable

from llm_service.types import Completion, GenerationInput, ModelInfo, Request, Token


@runtime_checkable
class Backend(Protocol):
    """An LLM that streams tokens. Implementations must never block the event loop."""

    async def start(self) -> None:
        """Load the model or connect; raise BackendUnavailable when it cannot serve."""

    def generate(self, request: Request) -> AsyncGenerator[Token | Completion, None]:
        """Yield tokens as they are produced, then exactly one Completion, last.

        Closing the iterator early (client cancel, deadline) must stop the generation in the backend
        promptly. Failures raise llm_service.errors.LlmError subclasses.
        """
        ...

    async def count_tokens(self, input: GenerationInput) -> int:
        """Tokens the model sees for this input (chat template applied for messages)."""
        ...

    async def check_health(self) -> bool:
        """True when the backend can serve a generation now."""
        ...

    def info(self) -> ModelInfo:
        """The served model and its limits (valid after start)."""
        ...

    async def aclose(self) -> None:
        """Release the model or connections."""
