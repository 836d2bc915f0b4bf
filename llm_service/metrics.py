"""Prometheus metrics of the LLM service."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_ITL = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)

REQUESTS = Counter("llm_requests_total", "RPCs by method and status code.", ["method", "code"])
IN_FLIGHT = Gauge("llm_generations_in_flight", "Generations holding an admission slot.")
QUEUED = Gauge("llm_generations_queued", "Generations waiting for an admission slot.")
QUEUE_TIME = Histogram("llm_queue_time_seconds", "Wait for an admission slot.", buckets=_LATENCY)
TTFT = Histogram("llm_time_to_first_token_seconds", "Request arrival to first token.", buckets=_LATENCY)
ITL = Histogram("llm_inter_token_latency_seconds", "Time between consecutive tokens.", buckets=_ITL)
DURATION = Histogram("llm_request_duration_seconds", "Request arrival to the end.", buckets=_LATENCY)
PROMPT_TOKENS = Counter("llm_prompt_tokens_total", "Prompt tokens processed.")
GENERATED_TOKENS = Counter("llm_generated_tokens_total", "Tokens generated.")
BACKEND_ERRORS = Counter("llm_backend_errors_total", "Backend failures by reason.", ["reason"])
