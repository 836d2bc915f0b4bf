"""Retrieval quality of follow-up questions in a conversation (data/followup_questions.jsonl).

Each row has earlier turns, a follow-up that leans on them ("how did he decide...?"), the standalone question
it stands for, and the expected documents. Ingests data/corpus.jsonl into a temporary embedded store and runs
`Rag.retrieve` (the service's pipeline, in this process, self-query + MMR: the service default) on:

- standalone: the standalone question, no history (the ceiling);
- follow-up, no history: the follow-up as asked, no conversation (the floor);
- follow-up, lexical: the follow-up with its history, condensed without a model (RAG_CONDENSE_*=lexical);
- follow-up, llm: the same, condensed by the LLM (the embedded SmolLM2-135M, started here, or --llm-target).

Prints recall@3/@5, MRR, author filters right/wrong, the ratio of recall@5 to the standalone questions'
(target: >= 0.9), and the condense step's time (what it adds to the time to first token), p50/p95.

    .venv/bin/python bench/followup_eval.py [--llm-target HOST:PORT] [--skip-llm] [--llm-threads 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

from common.paths import ROOT
from common.pipeline import open_pipeline
from common.stats import percentile
from rag_eval_metrics import Outcome, Question, distinct, score

os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OPIK_TRACK_DISABLE", "true")

from rag_service.conversation import Conversation, Role, Turn
from rag_service.documents import parse_jsonl
from rag_service.pipeline.rerank import MmrReranker
from rag_service.rag import Options, Rag
from rag_service.settings import Settings
from rag_service.tracing import NoopTracer

DEPTH = 20


@dataclass(frozen=True, slots=True)
class FollowUp:
    """One row of the follow-up set."""

    id: str
    conversation: Conversation
    question: str
    standalone: str
    relevant: frozenset[str]
    author_id: str | None


def load(path: Path) -> list[FollowUp]:
    """The follow-up set."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        turns = tuple(Turn(Role(t["role"]), t["content"]) for t in r["history"])
        rows.append(
            FollowUp(
                r["id"],
                Conversation(turns),
                r["question"],
                r["standalone"],
                frozenset(r["relevant_ids"]),
                r["author_id"],
            )
        )
    return rows


async def evaluate(rag: Rag, rows: Sequence[FollowUp], how: str) -> tuple[list[Outcome], list[str]]:
    """Runs every row one way (standalone, none, lexical or llm); returns outcomes and the queries searched."""
    options = Options(top_k=DEPTH, expand_queries=0, self_query=True, rerank=True)
    outcomes, searched = [], []
    for r in rows:
        text = r.standalone if how == "standalone" else r.question
        conversation = r.conversation if how in ("lexical", "llm") else None
        start = time.perf_counter()
        retrieval = await rag.retrieve(
            text,
            options,
            NoopTracer().start_trace(r.id, text),
            conversation=conversation,
            condense=how if how in ("lexical", "llm") else "off",
        )
        total = time.perf_counter() - start
        ids = [d.chunk.document_id for d in retrieval.documents]
        question = Question(r.id, text, r.relevant, r.author_id)
        outcomes.append(
            Outcome(
                question=question,
                documents=distinct(ids),
                context_documents=set(ids[:3]),
                author_id=retrieval.author.id if retrieval.author else None,
                expansions=0,
                timings=dict(retrieval.timings),
                total_s=total,
            )
        )
        searched.append(retrieval.standalone_query)
    return outcomes, searched


async def main() -> int:
    """Ingests, runs each way, prints the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=ROOT / "data" / "corpus.jsonl")
    parser.add_argument("--questions", type=Path, default=ROOT / "data" / "followup_questions.jsonl")
    parser.add_argument("--llm-target", default="", help="an LLM service to use instead of starting one")
    parser.add_argument("--skip-llm", action="store_true", help="no LLM rewrite row")
    parser.add_argument("--llm-threads", type=int, default=1, help="llama.cpp threads of the started LLM")
    parser.add_argument("--show", action="store_true", help="print every standalone query searched")
    args = parser.parse_args()
    began = time.perf_counter()
    rows = load(args.questions)
    documents, rejected = parse_jsonl(args.corpus.read_text().splitlines())
    if rejected:
        print(f"corpus lines rejected: {rejected}", file=sys.stderr)
        return 1
    settings = Settings(metrics_port=0)
    async with AsyncExitStack() as stack:
        opened = await open_pipeline(stack, settings, documents, args.llm_target, args.llm_threads)
        store, embedder, llm = opened.store, opened.embedder, opened.llm
        info = await llm.model_info()
        rag = Rag(settings, store, embedder, llm, MmrReranker(settings.mmr_diversity), NoopTracer())
        await evaluate(rag, rows[:2], "lexical")  # warm-up
        ways = ["standalone", "none", "lexical"] + ([] if args.skip_llm else ["llm"])
        results = {}
        for how in ways:
            results[how] = await evaluate(rag, rows, how)

    names = {
        "standalone": "standalone questions",
        "none": "follow-up, no history",
        "lexical": "follow-up, lexical",
        "llm": "follow-up, llm rewrite",
    }
    ceiling = score(results["standalone"][0]).recall5
    print(f"{len(rows)} follow-ups; LLM: {info.model_id} ({info.backend}); self-query + MMR, dense\n")
    print(f"{'way':<24} {'R@3':>6} {'R@5':>6} {'MRR':>6} {'auth':>7} {'R@5/std':>8} {'condense p50/p95 ms':>20}")
    for how in ways:
        s = score(results[how][0])
        condense = [o.timings["condense"] for o in results[how][0] if "condense" in o.timings]
        timing = f"{1000 * percentile(condense, 50):.1f}/{1000 * percentile(condense, 95):.1f}" if condense else "-"
        ratio = s.recall5 / ceiling if ceiling else 0.0
        auth = f"{s.author_right}/{s.author_wrong}"
        print(
            f"{names[how]:<24} {s.recall3:>6.3f} {s.recall5:>6.3f} {s.mrr:>6.3f} {auth:>7} {ratio:>8.2f} {timing:>20}"
        )
    if args.show:
        for how in ways[2:]:
            print(f"\n{names[how]}:")
            for r, q in zip(rows, results[how][1], strict=True):
                print(f"  {r.id}: {q}")
    print(
        "\nR@k: recall of the expected documents in the top k; auth: author filters right/wrong; R@5/std: recall@5"
        "\nover the standalone questions' (target >= 0.9); condense: the rewrite step, added before retrieval"
        f"\n(so to the time to first token). Total {time.perf_counter() - began:.0f} s."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
