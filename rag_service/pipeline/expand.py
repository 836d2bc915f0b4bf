"""Query expansion: alternative phrasings of the question, generated through the LLM service."""

from __future__ import annotations

import re

from rag_service.llm_client import LlmClient
from rag_service.types import GenerationParameters, Prompt

SYSTEM = (
    "You rewrite search queries. Given a question, write {n} different rephrasings of it that would help "
    "find relevant documents in a vector database. Write exactly one rephrasing per line, numbered '1.' "
    "to '{n}.', and nothing else."
)
_NUMBERED = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s*")


def expansion_prompt(query: str, n: int, style: str = "chat") -> Prompt:
    """The instruction that asks the model for n rephrasings, in the model's prompt format."""
    return Prompt.instruction(SYSTEM.format(n=n), query, style)


def parse_expansions(text: str, query: str, n: int) -> list[str]:
    """Up to n distinct rephrasings from the model's lines, the original query excluded."""
    seen = {query.strip().lower()}
    out: list[str] = []
    for line in text.splitlines():
        candidate = _NUMBERED.sub("", line).strip().strip('"').strip()
        if len(candidate) < 8 or candidate.lower() in seen:
            continue
        seen.add(candidate.lower())
        out.append(candidate)
        if len(out) == n:
            break
    return out


async def expand_query(llm: LlmClient, query: str, n: int, *, timeout: float, style: str = "chat") -> list[str]:
    """n alternative phrasings (fewer when the model gives fewer). Raises on failure: the caller falls back."""
    if n <= 0:
        return []
    parameters = GenerationParameters(max_new_tokens=40 * n, temperature=0.7, seed=7)
    result = await llm.generate(expansion_prompt(query, n, style), parameters, timeout=timeout)
    return parse_expansions(result.text, query, n)
