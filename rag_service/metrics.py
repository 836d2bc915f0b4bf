"""Prometheus metrics of the RAG service."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

REQUESTS = Counter("rag_requests_total", "RPCs by method and status code.", ["method", "code"])
IN_FLIGHT = Gauge("rag_requests_in_flight", "Answers and retrievals holding an admission slot.")
STEP_SECONDS = Histogram("rag_step_seconds", "Time per pipeline step.", ["step"], buckets=_LATENCY)
STEP_FALLBACKS = Counter("rag_step_fallbacks_total", "Optional steps that failed and fell back.", ["step"])
DOCUMENTS_RETRIEVED = Histogram(
    "rag_documents_retrieved", "Hits per request, before dedupe.", buckets=(0, 1, 3, 5, 10, 20, 50, 100, 200)
)
ANSWER_TTFT = Histogram(
    "rag_answer_time_to_first_token_seconds", "Request arrival to first answer token.", buckets=_LATENCY
)
INGESTED_CHUNKS = Counter("rag_ingested_chunks_total", "Chunks written by ingestion.")
LOOPS_STOPPED = Counter("rag_answer_loops_stopped_total", "Answers the loop guard stopped because they repeated.")
FEEDBACK_SCORES = Counter(
    "rag_feedback_scores_total",
    "Reader feedback scores by outcome: sent (confirmed by Opik), failed (not confirmed), dropped (never sent).",
    ["outcome"],
)
