"""Augmentation: the prompt template, in the format the model was trained with, fitted to its input limit."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

from rag_service.errors import InvalidArgument
from rag_service.llm_client import Prompt
from rag_service.types import Author, ScoredChunk

TEMPLATE_VERSION = "twin-v2"

SYSTEM = (
    "You are the digital twin of {who}. Answer the question in {whose} voice: first person, the same "
    "tone, opinions and vocabulary as in the writing below. Use only the facts in the context (the sources "
    "are shown to the reader separately). If the context does not answer the question, say so plainly."
)
ALPACA = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the "
    "request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)


@dataclass(frozen=True, slots=True)
class BuiltPrompt:
    """The prompt sent to the model, the context it kept, and its token count."""

    prompt: Prompt
    used: list[ScoredChunk]
    tokens: int
    dropped: int


def context_block(i: int, hit: ScoredChunk) -> str:
    """One numbered context block with its source."""
    c = hit.chunk
    source = ", ".join(x for x in (c.title, c.kind.value, c.author_full_name, c.link) if x)
    return f"[{i}] {source}\n{c.content.strip()}"


def render(query: str, hits: Sequence[ScoredChunk], author: Author | None, style: str) -> Prompt:
    """The prompt for these context blocks: chat messages (the model's own template) or Alpaca text."""
    names = sorted({h.chunk.author_full_name for h in hits})
    who = author.full_name if author else (names[0] if len(names) == 1 else "the author of the writing below")
    whose = f"{who}'s" if author or len(names) == 1 else "the author's"
    system = SYSTEM.format(who=who, whose=whose)
    context = "\n\n".join(context_block(i, h) for i, h in enumerate(hits, 1)) or "(no context found)"
    user = f"Context:\n{context}\n\nQuestion: {query}"
    if style == "alpaca":
        return Prompt(text=ALPACA.format(instruction=f"{system}\n\n{user}"))
    return Prompt(messages=(("system", system), ("user", user)))


async def fit_prompt(
    query: str,
    hits: Sequence[ScoredChunk],
    author: Author | None,
    *,
    style: str,
    budget: int,
    count: Callable[[Prompt], Awaitable[int]],
) -> BuiltPrompt:
    """The fullest prompt within `budget` tokens: the lowest-ranked context goes first, then the last kept
    block is shortened; the question is never cut (a question that alone exceeds the budget is rejected)."""
    kept = list(hits)
    while True:
        prompt = render(query, kept, author, style)
        tokens = await count(prompt)
        if tokens <= budget:
            return BuiltPrompt(prompt, kept, tokens, len(hits) - len(kept))
        if len(kept) > 1:
            kept.pop()
            continue
        if kept:
            # Shorten the one remaining block by the excess, converted to characters at this prompt's ratio.
            text = kept[0].chunk.content
            chars_per_token = _length(prompt) / tokens
            keep_chars = len(text) - int((tokens - budget + 8) * chars_per_token)
            if keep_chars >= 100:
                kept[0] = replace(kept[0], chunk=replace(kept[0].chunk, content=text[:keep_chars]))
            else:
                kept.pop()
            continue
        raise InvalidArgument({"query": f"the question alone needs {tokens} tokens; the model accepts {budget}"})


def _length(prompt: Prompt) -> int:
    return len(prompt.text) if prompt.text is not None else sum(len(c) for _, c in prompt.messages)
