"""The LLM contract's limits on GenerationParameters (llmtwin.llm.v1), in one place for both services.

The LLM service enforces them on every request; the RAG service checks the same rules before it does any
work, so a bad answer request is refused at once instead of after retrieval. Both depend on servekit, not on
each other. The proto comments on GenerationParameters state the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

# A ceiling on max_new_tokens checked before the model is known (the LLM service then checks the model's
# own max_total_tokens minus the prompt, which is never larger here).
MAX_NEW_TOKENS = 8192
MAX_TOP_K = 1000
MAX_STOP_SEQUENCES = 8
MAX_STOP_LENGTH = 64


def _finite_in(low: float, high: float, *, open_low: bool = False) -> Callable[[float], bool]:
    def ok(value: float) -> bool:
        return math.isfinite(value) and (low < value if open_low else low <= value) and value <= high

    return ok


# Field name → (rule, what the rule says), for the fields whose range does not depend on the model.
SAMPLING_RULES: dict[str, tuple[Callable[[float], bool], str]] = {
    "temperature": (_finite_in(0, 2), "must be between 0 and 2"),
    "top_p": (_finite_in(0, 1, open_low=True), "must be in (0, 1]"),
    "top_k": (lambda value: value <= MAX_TOP_K, f"must be between 0 and {MAX_TOP_K}"),
    "repetition_penalty": (_finite_in(0, 10, open_low=True), "must be in (0, 10]"),
    "frequency_penalty": (_finite_in(-2, 2), "must be between -2 and 2"),
    "presence_penalty": (_finite_in(-2, 2), "must be between -2 and 2"),
}


def sampling_violations(values: Mapping[str, float | None]) -> list[tuple[str, str]]:
    """("parameters.<field>", rule) for each given sampling value outside SAMPLING_RULES, in the rules' order;
    None values (unset fields) are not checked."""
    return [
        (f"parameters.{name}", rule)
        for name, (ok, rule) in SAMPLING_RULES.items()
        if (value := values.get(name)) is not None and not ok(value)
    ]
