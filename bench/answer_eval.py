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
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "gen" / "python")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from google.protobuf import json_format  # noqa: E402

from llmtwin.llm.v1 import llm_service_pb2 as llm_pb  # noqa: E402
from llmtwin.rag.v1 import rag_service_pb2 as pb  # noqa: E402
from llmtwin.rag.v1 import rag_service_pb2_grpc as pb_grpc  # noqa: E402
from rag_service.documents import parse_jsonl  # noqa: E402
from rag_service.ingest import ingest_via_service  # noqa: E402
from rag_service.pipeline.sources import CITATION  # noqa: E402
from tests.support.procs import free_port, start_module, wait_http, wait_serving  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from rag_bench import LLM_SERVICE, RAG_SERVICE, Service, percentile  # noqa: E402

SEED = 7
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


# ---- measures -----------------------------------------------------------------------------------------


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


# ---- asking -------------------------------------------------------------------------------------------


def request(question: Question, parameters: dict[str, Any]) -> pb.AnswerRequest:
    """The AnswerRequest for a question: service defaults, the configuration's parameters, a fixed seed."""
    message = pb.AnswerRequest(query=question.text, request_id=f"eval-{question.id}")
    json_format.ParseDict({"seed": SEED, **parameters}, message.parameters)
    return message


def context_text(context: pb.AnswerContext) -> str:
    """All text the prompt could have drawn on."""
    return "\n".join(d.content for d in context.documents)


def source_numbers(context: pb.AnswerContext) -> dict[int, str]:
    """Citation number -> document id: the context's grouped sources when the service sends them, else the
    documents in order of first appearance (how the prompt numbers them)."""
    if context.sources:  # a service older than `sources` sends none
        return {s.number: s.document_id for s in context.sources}
    return {i: d.document_id for i, d in enumerate(context.documents, 1)}


def cited_documents(answer: str, sources: dict[int, str]) -> list[str]:
    """Documents the answer cites with [n] markers that point at a source, in order, without repeats."""
    numbers = [int(n) for group in CITATION.findall(answer) for n in group.split(",")]
    return list(dict.fromkeys(sources[n] for n in numbers if n in sources))


async def ask_grpc(stub: pb_grpc.RagServiceStub, question: Question, parameters: dict[str, Any]) -> Outcome:
    """One AnswerStream call, timed from the client."""
    outcome = Outcome(question)
    start = time.perf_counter()
    pieces: list[str] = []
    try:
        async for message in stub.AnswerStream(request(question, parameters), timeout=300):
            kind = message.WhichOneof("event")
            if kind == "context":
                outcome.context = context_text(message.context)
                outcome.sources = source_numbers(message.context)
            elif kind == "delta":
                if not pieces:
                    outcome.ttft_s = time.perf_counter() - start
                pieces.append(message.delta.text)
            elif kind == "final":
                final = message.final
                outcome.final_answer = final.answer
                outcome.finish = llm_pb.FinishReason.Name(final.finish_reason)
                outcome.completion_tokens = final.usage.completion_tokens
                outcome.prompt_tokens = final.usage.prompt_tokens
    except grpc.aio.AioRpcError as exc:
        outcome.error = f"{exc.code().name}: {exc.details()}"
    outcome.total_s = time.perf_counter() - start
    outcome.answer = outcome.final_answer or "".join(pieces)  # the final's text is the answer (loop guard)
    outcome.finish = outcome.finish.removeprefix("FINISH_REASON_").lower()
    outcome.cited = cited_documents(outcome.answer, outcome.sources)
    return outcome


async def ask_gateway(url: str, question: Question, parameters: dict[str, Any]) -> Outcome:
    """One POST /v1/answer/stream, its server-sent events parsed as they arrive, timed from the client."""
    import httpx

    outcome = Outcome(question)
    body = {"query": question.text, "parameters": {"seed": SEED, **parameters}}
    pieces: list[str] = []
    start = time.perf_counter()
    async with (
        httpx.AsyncClient(base_url=url, timeout=300) as client,
        client.stream("POST", "/v1/answer/stream", json=body) as response,
    ):
        if response.status_code != 200:
            error = json.loads(await response.aread()).get("error", {})
            outcome.error = f"{error.get('status')}: {error.get('message')}"
        event = ""
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                data = json.loads(line.split(":", 1)[1])
                if event == "context":
                    outcome.context = "\n".join(d["content"] for d in data.get("documents", []))
                    sources = data.get("sources") or []
                    outcome.sources = {s["number"]: s["document_id"] for s in sources} or {
                        i: d["document_id"] for i, d in enumerate(data.get("documents", []), 1)
                    }
                elif event == "delta":
                    if not pieces:
                        outcome.ttft_s = time.perf_counter() - start
                    pieces.append(data["text"])
                elif event == "done":
                    outcome.final_answer = data.get("answer", "")
                    outcome.finish = data.get("finish_reason", "")
                    outcome.completion_tokens = data.get("usage", {}).get("completion_tokens", 0)
                    outcome.prompt_tokens = data.get("usage", {}).get("prompt_tokens", 0)
                elif event == "error":
                    outcome.error = f"{data['error'].get('status')}: {data['error'].get('message')}"
    outcome.total_s = time.perf_counter() - start
    outcome.answer = outcome.final_answer or "".join(pieces)
    outcome.cited = cited_documents(outcome.answer, outcome.sources)
    return outcome


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
    logs = ROOT / "var" / "bench"
    logs.mkdir(parents=True, exist_ok=True)
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
    llm = start(stack, checkout, "llm_service", env | {"LLM_LOG_LEVEL": "WARNING"}, logs)
    wait_serving(llm.target, LLM_SERVICE, timeout=120)
    rag_env = env | {"RAG_LLM_TARGET": llm.target, "RAG_QDRANT_PATH": store, "RAG_TRACING": "false"}
    rag = start(stack, checkout, "rag_service", rag_env | {"RAG_LOG_LEVEL": "WARNING"}, logs)
    wait_serving(rag.target, RAG_SERVICE, timeout=120)
    if ingest:
        documents, _ = parse_jsonl((ROOT / "data" / "corpus.jsonl").read_text().splitlines())
        report = _run_sync(ingest_via_service(rag.target, documents))
        print(f"ingested {report.documents_written} documents, {report.chunks_written} chunks", file=sys.stderr)
    if not args.gateway:
        return rag.target, ""
    gateway = start(stack, checkout, "gateway", env | {"GATEWAY_RAG_TARGET": rag.target}, logs)
    gateway_url = f"http://{gateway.target}"
    wait_http(gateway_url + "/readyz", 60)
    return rag.target, gateway_url


def start(stack: ExitStack, checkout: Path, module: str, env: dict[str, str], logs: Path) -> Service:
    """`python -m module` run from the checkout on a free port, stopped when the stack closes."""
    port = free_port()
    prefix = {"llm_service": "LLM", "rag_service": "RAG", "gateway": "GATEWAY"}[module]
    env = env | {f"{prefix}_PORT": str(port)} | ({} if module == "gateway" else {f"{prefix}_METRICS_PORT": "0"})
    service = Service(start_module(module, env, logs / f"answer-eval-{module}.log", cwd=checkout), f"127.0.0.1:{port}")
    stack.callback(service.stop)
    return service


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
