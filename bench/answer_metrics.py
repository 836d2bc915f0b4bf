"""The answer-quality measures of bench/answer_eval.py (docs/evaluation.md, "Answer quality"): key facts,
groundedness, repetition, refusals, citations, and the figures of one configuration."""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from common.stats import percentile

from rag_service.pipeline.sources import CITATION

STOPWORDS = frozenset(
    "the a an and or but if then than that this these those there their them they it its it's is are was were be "
    "been being to of in on at by for with from as into about over under not no nor so too very can could would "
    "should will shall may might must do does did done have has had having i me my mine we our you your he him "
    "his she her hers what which who whom whose when where why how all any both each few more most other some "
    "such only own same just also up out off again further once here s t don doesn didn isn aren wasn weren".split()
)
REFUSAL = re.compile(
    r"\b(i (do not|don't|dont) know|not sure|no idea|(does|do|did) ?n[o']t (say|cover|mention|answer|contain|"
    r"address|discuss|include|talk)|not (covered|mentioned|addressed|discussed|in the (context|writing|sources))|"
    r"no (information|mention|context)|(cannot|can't|can not|unable to) (answer|find|tell|say)|"
    r"(haven't|have not|never) (written|writ|talked|said)|nothing (about|on))",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Question:
    """A question of the answer set: its type, relevant documents and key facts (alternatives per fact)."""

    id: str
    type: str
    text: str
    relevant: frozenset[str]
    facts: tuple[tuple[str, ...], ...]


@dataclass(slots=True)
class Outcome:
    """What one question got: the answer, its context, citations and timings (or the error)."""

    question: Question
    answer: str = ""
    final_answer: str = ""
    context: str = ""
    sources: dict[int, str] = field(default_factory=dict)  # citation number -> document id
    cited: list[str] = field(default_factory=list)  # document ids the answer cites, in order
    finish: str = ""
    completion_tokens: int = 0
    prompt_tokens: int = 0
    ttft_s: float = 0.0
    total_s: float = 0.0
    error: str = ""


def words(text: str) -> list[str]:
    """Lower-case word tokens."""
    return re.findall(r"[a-z0-9][a-z0-9.'%-]*[a-z0-9%]|[a-z0-9]", text.lower())


def content_words(text: str) -> list[str]:
    """Words that carry content: not stopwords, not 1-2 letters (numbers always count)."""
    return [w for w in words(text) if w.isdigit() or (len(w) > 2 and w not in STOPWORDS)]


def sentences(text: str) -> list[str]:
    """Sentences of an answer, citation markers removed."""
    text = CITATION.sub("", text)
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", text) if s.strip()]


def fact_recall(answer: str, facts: Sequence[Sequence[str]]) -> float:
    """Share of facts of which some alternative occurs in the answer (case- and whitespace-insensitive)."""
    norm = " ".join(answer.lower().split())
    return sum(any(" ".join(a.lower().split()) in norm for a in alts) for alts in facts) / len(facts)


def groundedness(answer: str, context: str) -> tuple[int, int]:
    """(supported, counted) sentences: a sentence with >= 3 content words is supported when >= 60 % of them
    occur in the context."""
    vocabulary = set(content_words(context))
    supported = counted = 0
    for sentence in sentences(answer):
        cws = content_words(sentence)
        if len(cws) < 3:
            continue
        counted += 1
        supported += sum(w in vocabulary for w in cws) / len(cws) >= 0.6
    return supported, counted


def distinct_ngrams(text: str, n: int = 3) -> float:
    """Distinct word n-grams over all n-grams (1.0 for answers shorter than n words)."""
    ws = words(text)
    grams = [tuple(ws[i : i + n]) for i in range(len(ws) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 1.0


def is_refusal(outcome: Outcome) -> bool:
    """The twin said it does not know (or the service refused the question)."""
    return "INVALID_ARGUMENT" in outcome.error or bool(REFUSAL.search(outcome.answer))


def summarize(outcomes: Sequence[Outcome]) -> dict[str, float]:
    """The table's figures for one configuration."""
    answerable = [o for o in outcomes if o.question.type == "answerable" and not o.error]
    refusable = [o for o in outcomes if o.question.type != "answerable"]
    done = [o for o in outcomes if not o.error]
    supported = counted = 0
    for o in answerable:
        s, c = groundedness(o.answer, o.context)
        supported, counted = supported + s, counted + c
    cited = [o for o in answerable if o.cited]
    citations = [(o, d) for o in answerable for d in o.cited]
    distinct = [distinct_ngrams(o.answer) for o in done]
    return {
        "n": len(outcomes),
        "errors": sum(bool(o.error) for o in outcomes),
        "fact_recall": statistics.fmean(fact_recall(o.answer, o.question.facts) for o in answerable)
        if answerable
        else float("nan"),
        "context_facts": statistics.fmean(fact_recall(o.context, o.question.facts) for o in answerable)
        if answerable
        else float("nan"),
        "grounded": supported / counted if counted else float("nan"),
        "distinct3": statistics.fmean(distinct) if distinct else float("nan"),
        "loops": sum(d < 0.5 for d in distinct) / len(done) if done else float("nan"),
        "at_limit": sum(o.finish == "length" for o in done) / len(done) if done else float("nan"),
        "idk": sum(is_refusal(o) for o in refusable) / len(refusable) if refusable else float("nan"),
        "idk_answerable": sum(is_refusal(o) for o in answerable) / len(answerable) if answerable else float("nan"),
        "cited": len(cited) / len(answerable) if answerable else float("nan"),
        "cite_ok": sum(d in o.question.relevant for o, d in citations) / len(citations) if citations else float("nan"),
        "words": statistics.fmean(len(words(o.answer)) for o in done) if done else float("nan"),
        "prompt_tokens": statistics.fmean(o.prompt_tokens for o in done) if done else float("nan"),
        "ttft_p50": percentile([o.ttft_s for o in done], 50) if done else float("nan"),
        "ttft_p95": percentile([o.ttft_s for o in done], 95) if done else float("nan"),
        "total_p50": percentile([o.total_s for o in done], 50) if done else float("nan"),
    }
