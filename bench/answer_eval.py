"""Answer quality of the twin, per configuration: key facts, groundedness, repetition, refusals, citations, speed.

Starts the services as processes (`python -m llm_service`, `python -m rag_service`, optionally `python -m
gateway`) on a temporary embedded store, ingests data/corpus.jsonl through `IngestDocuments`, then asks every
question of data/answer_questions.jsonl through `RagService/AnswerStream` (or the gateway's
`/v1/answer/stream` with --gateway), one at a time, once per configuration. A configuration is a name and
the generation parameters sent with each request (`--config NAME='{"repetition_penalty": 1.2}'`); `default`
sends none, i.e. measures the service's own defaults. Every request carries a fixed seed, so runs compare.

The LLM backend is whatever the LLM service is configured with: the embedded model by default, or set
`LLM_BACKEND=tgi LLM_TGI_URL=...` / `LLM_BACKEND=sagemaker LLM_SAGEMAKER_ENDPOINT_NAME=...` in the
environment (it is passed on), or point at services already running with --rag-target / --gateway-url.
--checkout runs the services from another checkout (e.g. a `git worktree` of an older commit: "before").

    .venv/bin/python bench/answer_eval.py [--config NAME=JSON ...] [--limit N] [--gateway] [--examples 3]
        [--checkout PATH] [--rag-target HOST:PORT] [--llm-threads 1] [--json docs/bench/answer_eval.json]

Measures (defined in docs/evaluation.md, "Answer quality"):
- fact R: share of an answerable question's key facts that the answer states (any alternative phrase of a
  fact, case-insensitively), averaged over answerable questions;
- grounded: share of answer sentences supported by the retrieved context (>= 60 % of a sentence's content
  words occur in the context text), over answerable questions' sentences with >= 3 content words;
- distinct-3: distinct word 3-grams / all 3-grams per answer (1 = no repetition), mean; loops: answers under
  0.5; at limit: answers that ended because they reached max_new_tokens;
- idk: share of unanswerable / unknown-author questions answered with a refusal ("I don't know", "the
  context does not cover"...), or refused by the service;
- cited: share of answerable answers citing at least one [n]; cite ok: share of cited sources that are a
  relevant document of the question;
- words, TTFT (client-side) p50/p95 and total time p50.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import grpc
from answer_ask import SEED, ask_gateway, ask_grpc
from answer_metrics import Outcome, Question, summarize
from common.data import corpus_documents
from common.paths import ROOT, logs_dir
from common.services import ingest_documents, spawn

from llmtwin.rag.v1 import rag_service_pb2_grpc as pb_grpc

# ---- report -------------------------------------------------------------------------------------------

COLUMNS = [
    ("fact R", "fact_recall", "{:.3f}"),
    ("ctx fact R", "context_facts", "{:.2f}"),
    ("grounded", "grounded", "{:.2f}"),
    ("distinct-3", "distinct3", "{:.2f}"),
    ("loops", "loops", "{:.0%}"),
    ("at limit", "at_limit", "{:.0%}"),
    ("idk (unans.)", "idk", "{:.0%}"),
    ("idk (ans.)", "idk_answerable", "{:.0%}"),
    ("cited", "cited", "{:.0%}"),
    ("cite ok", "cite_ok", "{:.0%}"),
    ("words", "words", "{:.0f}"),
    ("prompt tok", "prompt_tokens", "{:.0f}"),
    ("TTFT p50/p95 s", None, ""),
    ("total p50 s", "total_p50", "{:.2f}"),
]


def table(results: dict[str, dict[str, float]]) -> str:
    """The markdown table, one row per configuration."""
    lines = [
        "| configuration | " + " | ".join(c[0] for c in COLUMNS) + " |",
        "| --- |" + " ---: |" * len(COLUMNS),
    ]
    for name, r in results.items():
        cells = [
            f"{r['ttft_p50']:.2f} / {r['ttft_p95']:.2f}" if key is None else fmt.format(r[key])
            for _, key, fmt in COLUMNS
        ]
        errors = f" ({r['errors']:.0f} errors)" if r["errors"] else ""
        lines.append(f"| {name}{errors} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def examples(outcomes: Sequence[Outcome], ids: Sequence[str]) -> str:
    """Answers to a few questions, verbatim."""
    out = []
    for o in outcomes:
        if o.question.id in ids:
            text = o.error or o.answer.strip().replace("\n", " ")
            out.append(f"- **{o.question.id}** {o.question.text}\n  > {text[:700]}")
    return "\n".join(out)


# ---- main ---------------------------------------------------------------------------------------------


def load_questions(path: Path, limit: int) -> list[Question]:
    """The question set; --limit keeps the first N of each type."""
    questions: list[Question] = []
    per_type: dict[str, int] = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        q = json.loads(line)
        per_type[q["type"]] = per_type.get(q["type"], 0) + 1
        if limit and per_type[q["type"]] > limit:
            continue
        facts = tuple(tuple(f) for f in q.get("key_facts", []))
        questions.append(Question(q["id"], q["type"], q["question"], frozenset(q.get("relevant_ids", [])), facts))
    return questions


def parse_configs(values: Sequence[str]) -> dict[str, tuple[dict[str, Any], dict[str, str]]]:
    """NAME=JSON pairs: generation parameters, and under "env" the services' settings (LLM_*, RAG_*) for that
    configuration; none given: the service defaults only."""
    configs: dict[str, tuple[dict[str, Any], dict[str, str]]] = {}
    for value in values or ["default={}"]:
        name, _, text = value.partition("=")
        parameters = json.loads(text or "{}")
        env = {k: str(v) for k, v in parameters.pop("env", {}).items()}
        configs[name] = (parameters, env)
    return configs


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start what is needed, ask every question under every configuration, print the tables; the figures
    per configuration (and the settings of the run) are returned for `make bench`."""
    questions = load_questions(Path(args.questions), args.limit)
    configs = parse_configs(args.config)
    logs = logs_dir()
    if args.gateway and args.rag_target and not args.gateway_url:
        raise SystemExit("--gateway with --rag-target needs --gateway-url")
    results: dict[str, dict[str, float]] = {}
    answers: dict[str, list[Outcome]] = {}
    with tempfile.TemporaryDirectory(prefix="answer-eval-") as store:
        for name, (parameters, env) in configs.items():
            # Fresh services per configuration: no prompt cached by an earlier one, its own service settings.
            with ExitStack() as stack:
                rag_target, gateway_url = args.rag_target, args.gateway_url
                if not rag_target and not gateway_url:
                    rag_target, gateway_url = start_stack(stack, args, logs, store, env, ingest=not results)
                async with grpc.aio.insecure_channel(rag_target or "127.0.0.1:1") as channel:
                    stub = pb_grpc.RagServiceStub(channel)
                    outcomes = []
                    for question in questions:
                        if args.gateway:
                            outcomes.append(await ask_gateway(gateway_url, question, parameters))
                        else:
                            outcomes.append(await ask_grpc(stub, question, parameters))
            results[name] = summarize(outcomes)
            answers[name] = outcomes
            print(f"{name}: done ({len(outcomes)} questions)", file=sys.stderr, flush=True)
    via = "gateway /v1/answer/stream" if args.gateway else "gRPC AnswerStream"
    print(f"\n{len(questions)} questions ({', '.join(_counts(questions))}), via {via}, seed {SEED}\n")
    print(table(results))
    if args.examples:
        ids = [q.id for q in questions if q.type == "answerable"][: args.examples]
        ids += [q.id for q in questions if q.type != "answerable"][:1]
        for name, outcomes in answers.items():
            print(f"\n#### {name}\n\n{examples(outcomes, ids)}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        dump = {
            name: {
                "summary": results[name],
                "answers": [
                    {"id": o.question.id, "answer": o.answer, "error": o.error, "cited": o.cited, "finish": o.finish}
                    for o in outcomes
                ],
            }
            for name, outcomes in answers.items()
        }
        await asyncio.to_thread(Path(args.json).write_text, json.dumps(dump, indent=1))
    return {"via": via, "questions": len(questions), "seed": SEED, "configs": results}


def _counts(questions: Sequence[Question]) -> list[str]:
    kinds = [q.type for q in questions]
    return [f"{kinds.count(t)} {t}" for t in ("answerable", "unanswerable", "unknown_author") if t in kinds]


def start_stack(
    stack: ExitStack, args: argparse.Namespace, logs: Path, store: str, settings: dict[str, str], *, ingest: bool
) -> tuple[str, str]:
    """LLM and RAG services (and the gateway with --gateway) from --checkout on the store at `store`, with
    `settings` in their environment; the corpus is ingested when `ingest`."""
    checkout = Path(args.checkout).resolve() if args.checkout else ROOT
    env = {"PYTHONPATH": f"{checkout}:{checkout / 'gen' / 'python'}", "OPIK_TRACK_DISABLE": "true"}
    if args.llm_threads:
        env["LLM_N_THREADS"] = str(args.llm_threads)
    env |= settings

    def start(module: str, module_env: dict[str, str]) -> str:
        service = spawn(module, module_env, logs / f"answer-eval-{module}.log", cwd=checkout)
        stack.callback(service.stop)
        return service.target

    llm = start("llm_service", env | {"LLM_LOG_LEVEL": "WARNING"})
    rag_env = env | {"RAG_LLM_TARGET": llm, "RAG_QDRANT_PATH": store, "RAG_TRACING": "false"}
    rag = start("rag_service", rag_env | {"RAG_LOG_LEVEL": "WARNING"})
    if ingest:
        report = _run_sync(ingest_documents(rag, corpus_documents()))
        print(f"ingested {report.documents_written} documents, {report.chunks_written} chunks", file=sys.stderr)
    if not args.gateway:
        return rag, ""
    return rag, f"http://{start('gateway', env | {'GATEWAY_RAG_TARGET': rag})}"


def _run_sync(coro: Any) -> Any:
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", default=str(ROOT / "data" / "answer_questions.jsonl"))
    parser.add_argument("--config", action="append", default=[], help="NAME=JSON generation parameters")
    parser.add_argument("--limit", type=int, default=0, help="first N questions of each type (0: all)")
    parser.add_argument("--gateway", action="store_true", help="ask through the gateway's SSE route")
    parser.add_argument("--gateway-url", default="", help="a running gateway (with --gateway)")
    parser.add_argument("--rag-target", default="", help="a running RAG service (its store already ingested)")
    parser.add_argument("--checkout", default="", help="run the services from this checkout (e.g. a worktree)")
    parser.add_argument("--llm-threads", type=int, default=0, help="LLM_N_THREADS (0: the service default)")
    parser.add_argument("--examples", type=int, default=3, help="print the answers to N questions per config")
    parser.add_argument("--json", default="", help="write every answer and summary to this file")
    return parser


def main() -> None:
    """Command line."""
    asyncio.run(run(build_parser().parse_args()))


if __name__ == "__main__":
    main()
