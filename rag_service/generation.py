"""Answer generation: the parameters an answer is generated with, its prompt fitted to the model's room, and
the relay of the LLM's tokens through the loop guard. Domain types only (rag_service.types)."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from rag_service import metrics
from rag_service.conversation import Conversation
from rag_service.errors import InvalidArgument, ServiceError
from rag_service.llm_client import LlmClient
from rag_service.pipeline.loops import LoopGuard
from rag_service.pipeline.prompt import STOP_SEQUENCES, BuiltPrompt, fit_prompt
from rag_service.pipeline.sources import Source
from rag_service.settings import Settings
from rag_service.steps import Steps
from rag_service.types import (
    Author,
    FinishReason,
    Generation,
    GenerationParameters,
    ModelInfo,
    Prompt,
    Token,
    Usage,
)
from servekit.limits import MAX_STOP_SEQUENCES

V = TypeVar("V")
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Delta:
    """A piece of the answer."""

    text: str


@dataclass(slots=True)
class Final:
    """The end of an answer."""

    answer: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    timings: dict[str, float]
    trace_id: str
    ttft_s: float
    total_s: float
    model_id: str
    request_id: str
    citations: list[Source] = field(default_factory=list)


def with_defaults(given: GenerationParameters, settings: Settings) -> GenerationParameters:
    """The caller's parameters with the RAG service's defaults for the unset ones, and the prompt's stop
    sequences added where the contract's limit leaves room."""
    room = MAX_STOP_SEQUENCES - len(given.stop_sequences)
    added = [s for s in STOP_SEQUENCES if s not in given.stop_sequences][:room]
    return replace(
        given,
        max_new_tokens=_default(given.max_new_tokens, settings.default_max_new_tokens),
        temperature=_default(given.temperature, settings.default_temperature),
        repetition_penalty=_default(given.repetition_penalty, settings.default_repetition_penalty),
        # Zero stays unset: the LLM service's own default, for backends without the knob.
        frequency_penalty=_default(given.frequency_penalty, settings.default_frequency_penalty or None),
        presence_penalty=_default(given.presence_penalty, settings.default_presence_penalty or None),
        stop_sequences=(*given.stop_sequences, *added),
    )


def _default(value: V | None, default: V | None) -> V | None:
    return default if value is None else value


def author_adapter(author: Author | None, adapters: Mapping[str, str], model: ModelInfo) -> str:
    """The LoRA adapter that answers about `author` (its twin, RAG_AUTHOR_ADAPTERS) when the LLM service serves
    it; "" (the base model) for no author, an unmapped one, or an adapter the LLM service does not list."""
    adapter = adapters.get(author.id, "") if author is not None else ""
    if adapter and adapter not in model.adapters:
        log.warning(
            "adapter %r of author %s is not served by the LLM service (it serves: %s): the base model answers",
            adapter,
            author.id if author else "",
            ", ".join(model.adapters) or "none",
        )
        return ""
    return adapter


async def answer_prompt(
    query: str,
    sources: Sequence[Source],
    author: Author | None,
    parameters: GenerationParameters,
    model: ModelInfo,
    *,
    style: str,
    count: Callable[[Prompt], Awaitable[int]],
    conversation: Conversation | None = None,
) -> tuple[BuiltPrompt, int]:
    """The fullest prompt that leaves max_new_tokens of room in the model, and the budget it was fitted to."""
    max_new = parameters.max_new_tokens or 0
    budget = min(model.max_input_tokens, model.max_total_tokens - max_new)
    try:
        built = await fit_prompt(
            query, sources, author, style=style, budget=budget, count=count, conversation=conversation
        )
        return built, budget
    except InvalidArgument:
        if budget >= model.max_input_tokens:
            raise  # the question alone is over the model's input limit
        # It is the room max_new_tokens leaves that is too small, not the question that is too long.
        raise InvalidArgument(
            {
                "parameters.max_new_tokens": f"{max_new} new tokens leave {max(budget, 0)} "
                f"of the model's {model.max_total_tokens} tokens for the prompt, too few for this question"
            }
        ) from None


def shown(prompt: Prompt) -> dict[str, Any]:
    """The prompt as a trace shows it."""
    return {"prompt": prompt.text} if prompt.text is not None else {"messages": prompt.messages}


async def generate(
    llm: LlmClient,
    steps: Steps,
    built: BuiltPrompt,
    parameters: GenerationParameters,
    model: ModelInfo,
    timeout: float | None,
    guard: LoopGuard | None,
    adapter: str = "",
) -> AsyncGenerator[Token | Generation, None]:
    """The "generate" step: the answer's tokens as the LLM streams them (through the loop guard), then its
    Generation; closing the iterator cancels the generation. `adapter`: the LoRA adapter ("": the base model)."""
    with steps.step("generate", shown(built.prompt), type="llm") as step:
        async with (
            aclosing(llm.stream(built.prompt, parameters, timeout=timeout, adapter=adapter)) as stream,
            aclosing(guarded(stream, guard, built.tokens, model.model_id)) as events,
        ):
            async for event in events:
                if isinstance(event, Generation):
                    generation = replace(event, model_id=event.model_id or model.model_id)
                    break
                yield event
        step.output = {"answer": generation.text}
        step.metadata = {
            "parameters": parameters.given(),
            "ttft_s": generation.ttft_s,
            "finish_reason": generation.finish_reason.value,
            "adapter": adapter or None,
        }
        step.usage = {
            "prompt_tokens": generation.usage.prompt_tokens,
            "completion_tokens": generation.usage.completion_tokens,
            "total_tokens": generation.usage.total_tokens,
        }
        step.model = generation.model_id
    yield generation


async def guarded(
    events: AsyncIterator[Token | Generation], guard: LoopGuard | None, prompt_tokens: int, model_id: str
) -> AsyncGenerator[Token | Generation, None]:
    """The LLM's tokens, then its Generation. With a guard, an answer that starts repeating itself ends before
    the repetition, with finish reason REPETITION. A stream that ends without a Generation is an error."""
    tokens = 0
    async for event in events:
        if isinstance(event, Generation):
            yield event
            return
        tokens += 1
        if guard is not None and guard.feed(event.text):
            metrics.LOOPS_STOPPED.inc()
            yield Generation(guard.answer, FinishReason.REPETITION, Usage(prompt_tokens, tokens), model_id)
            return
        yield event
    raise ServiceError("the LLM stream ended without a final message", reason="LLM_ERROR")
