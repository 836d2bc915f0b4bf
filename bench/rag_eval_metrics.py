"""The retrieval metrics of bench/rag_eval.py: document-level recall@k, hit@3, MRR and context recall per
question, averaged over a configuration's outcomes, and question-by-question comparisons of two configurations."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Question:
    """A labelled question: the documents that answer it, and the author it names (if any)."""

    id: str
    text: str
    relevant: frozenset[str]
    author_id: str | None


@dataclass(slots=True)
class Outcome:
    """What one question got under one configuration."""

    question: Question
    documents: list[str]
    context_documents: set[str]
    author_id: str | None
    expansions: int
    timings: dict[str, float]
    total_s: float


@dataclass(slots=True)
class Scores:
    """Averaged metrics over a set of outcomes."""

    n: int
    recall3: float
    recall5: float
    hit3: float
    mrr: float
    context_recall: float
    recall3_named: float
    recall3_unnamed: float
    author_right: int = 0
    author_wrong: int = 0
    expansions: float = 0.0
    latency: dict[str, list[float]] = field(default_factory=dict)


def load_questions(path: Path) -> list[Question]:
    """The question set."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [Question(r["id"], r["question"], frozenset(r["relevant_ids"]), r.get("author_id")) for r in rows]


def distinct(ids: Sequence[str]) -> list[str]:
    """Document ids in rank order, first occurrence wins."""
    return list(dict.fromkeys(ids))


def recall(outcome: Outcome, k: int) -> float:
    """Share of the question's relevant documents in the top k documents."""
    return len(outcome.question.relevant & set(outcome.documents[:k])) / len(outcome.question.relevant)


def reciprocal_rank(outcome: Outcome) -> float:
    """1 / rank of the first relevant document, 0 when none was retrieved."""
    return next((1 / i for i, d in enumerate(outcome.documents, 1) if d in outcome.question.relevant), 0.0)


def mean(values: Sequence[float]) -> float:
    """Mean, 0 for nothing."""
    return statistics.fmean(values) if values else 0.0


def score(outcomes: Sequence[Outcome]) -> Scores:
    """Metrics over these outcomes."""
    named = [o for o in outcomes if o.question.author_id]
    unnamed = [o for o in outcomes if not o.question.author_id]
    latency: dict[str, list[float]] = {}
    for o in outcomes:
        for step, seconds in o.timings.items():
            latency.setdefault(step, []).append(seconds)
        latency.setdefault("total", []).append(o.total_s)
    return Scores(
        n=len(outcomes),
        recall3=mean([recall(o, 3) for o in outcomes]),
        recall5=mean([recall(o, 5) for o in outcomes]),
        hit3=mean([float(bool(o.question.relevant & set(o.documents[:3]))) for o in outcomes]),
        mrr=mean([reciprocal_rank(o) for o in outcomes]),
        context_recall=mean(
            [len(o.question.relevant & o.context_documents) / len(o.question.relevant) for o in outcomes]
        ),
        recall3_named=mean([recall(o, 3) for o in named]),
        recall3_unnamed=mean([recall(o, 3) for o in unnamed]),
        author_right=sum(o.author_id == o.question.author_id for o in named if o.author_id),
        author_wrong=sum(1 for o in outcomes if o.author_id and o.author_id != o.question.author_id),
        expansions=mean([o.expansions for o in outcomes]),
        latency=latency,
    )


def versus(outcomes: Sequence[Outcome], baseline: Sequence[Outcome]) -> tuple[int, int]:
    """Questions whose recall@3 is higher / lower than the baseline's (paired by question)."""
    base = {o.question.id: recall(o, 3) for o in baseline}
    wins = sum(1 for o in outcomes if recall(o, 3) > base[o.question.id] + 1e-9)
    losses = sum(1 for o in outcomes if recall(o, 3) < base[o.question.id] - 1e-9)
    return wins, losses


def paired(outcomes: Sequence[Outcome], reference: Sequence[Outcome]) -> str:
    """Question-by-question comparison with a reference configuration (on the questions both ran)."""
    ref = {o.question.id: o for o in reference}
    pairs = [(o, ref[o.question.id]) for o in outcomes if o.question.id in ref]
    hit = [
        (bool(o.question.relevant & set(o.documents[:3])), bool(o.question.relevant & set(r.documents[:3])))
        for o, r in pairs
    ]
    cells = [
        sum(recall(o, 3) > recall(r, 3) + 1e-9 for o, r in pairs),
        sum(recall(o, 3) < recall(r, 3) - 1e-9 for o, r in pairs),
        sum(h and not g for h, g in hit),
        sum(g and not h for h, g in hit),
        sum(reciprocal_rank(o) > reciprocal_rank(r) + 1e-9 for o, r in pairs),
        sum(reciprocal_rank(o) < reciprocal_rank(r) - 1e-9 for o, r in pairs),
    ]
    return f"n {len(pairs):>2}: R@3 +{cells[0]}/-{cells[1]}  hit@3 +{cells[2]}/-{cells[3]}  RR +{cells[4]}/-{cells[5]}"
