"""LLM service configuration: environment variables with the prefix LLM_ (see docs/configuration.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from servekit.settings import GrpcServerSettings


class Settings(GrpcServerSettings):
    """Every setting of the LLM service, with its documented default (listen, TLS and auth: servekit.settings)."""

    model_config = SettingsConfigDict(env_prefix="LLM_", extra="ignore")

    port: int = Field(default=50052, description="gRPC port (0: any free port).")
    metrics_port: int = Field(default=9102, description="Prometheus /metrics HTTP port; 0 disables it.")
    backend: Literal["embedded", "tgi", "sagemaker", "openai", "echo"] = Field(
        default="embedded",
        description="embedded (xllamacpp, CPU), tgi, sagemaker, openai (vLLM, SGLang, llama.cpp server...), "
        "or echo (tests, benchmarks).",
    )
    model_id: str = Field(default="", description="Model id reported to clients; default: the backend's own.")

    max_concurrent: int = Field(default=4, ge=1, description="Generations in flight at once.")
    max_queued: int = Field(default=32, ge=0, description="Generations waiting for a slot; beyond: RESOURCE_EXHAUSTED.")
    queue_timeout_s: float = Field(default=30.0, gt=0, description="Longest wait for a slot before RESOURCE_EXHAUSTED.")
    shutdown_grace_s: float = Field(default=20.0, ge=0, description="In-flight streams get this long to finish.")
    health_interval_s: float = Field(default=5.0, gt=0, description="Backend health check period.")

    default_max_new_tokens: int = Field(default=256, description="max_new_tokens when a request leaves it unset.")
    default_temperature: float = Field(default=0.7, description="temperature when a request leaves it unset.")

    model_path: str = Field(default="", description="embedded: a GGUF file (default: packaged SmolLM2-135M-Instruct).")
    hf_repo: str = Field(default="", description="embedded: Hugging Face repo id of a GGUF model (HF cache).")
    hf_file: str = Field(default="", description="embedded: GGUF file name in hf_repo.")
    n_parallel: int = Field(default=4, ge=1, description="embedded: llama.cpp slots (continuous batching).")
    ctx_per_slot: int = Field(default=2048, ge=128, description="embedded: context per slot = max total tokens.")
    max_input_tokens: int = Field(default=1536, ge=16, description="embedded: longest prompt accepted, in tokens.")
    n_threads: int = Field(
        default=0,
        ge=0,
        description="embedded: llama.cpp CPU threads; 0: all cores but one (the embedder and gRPC loops need one).",
    )

    repeat_last_n: int = Field(
        default=64, ge=-1, description="embedded: tokens the repetition penalties look back on (-1: the context)."
    )
    dry_multiplier: float = Field(
        default=0.0, ge=0, description="embedded: DRY sampling strength against repeated sequences (0: off)."
    )
    dry_base: float = Field(default=1.75, ge=1, description="embedded: DRY penalty growth per repeated token.")
    dry_allowed_length: int = Field(default=2, ge=1, description="embedded: DRY: repeats this long go unpenalized.")
    cache_prompt: bool = Field(
        default=True, description="embedded: reuse a slot's KV for the prompt prefix it shares with its last prompt."
    )
    n_cache_reuse: int = Field(
        default=0, ge=0, description="embedded: reuse cached KV chunks of at least this many tokens (0: prefix only)."
    )
    lora_adapters: str = Field(
        default="",
        description="embedded: LoRA adapter GGUFs served on the base model, `name=path.gguf[@scale]` comma-separated "
        "(scale default 1); a request picks one by name (GenerateRequest.adapter).",
    )

    tgi_url: str = Field(default="http://127.0.0.1:8080", description="tgi: base URL of the TGI server.")
    tgi_timeout_s: float = Field(default=120.0, description="tgi: connect and between-tokens timeout.")
    tgi_token: SecretStr | None = Field(
        default=None, description="tgi: bearer token (Hugging Face Inference Endpoints, a gateway in front)."
    )
    tgi_adapters: str = Field(
        default="",
        description="tgi: LoRA adapter ids the TGI server loaded (its LORA_ADAPTERS), comma-separated; a request "
        "picks one by id (GenerateRequest.adapter).",
    )

    sagemaker_endpoint_name: str = Field(default="", description="sagemaker: endpoint name.")
    sagemaker_inference_component: str = Field(default="", description="sagemaker: inference component, if any.")
    sagemaker_payload: Literal["tgi", "openai"] = Field(
        default="tgi",
        description="sagemaker: the container's payloads: tgi (HF TGI DLC) or openai (HF vLLM DLC, LMI with vLLM).",
    )
    sagemaker_adapters: str = Field(
        default="",
        description="sagemaker: LoRA adapters as name=inference-component pairs, comma-separated (deploy prints them).",
    )
    sagemaker_region: str = Field(default="", description="sagemaker: AWS region (default: boto3's own lookup).")
    sagemaker_endpoint_url: str = Field(default="", description="sagemaker: runtime URL override (VPC endpoints).")
    sagemaker_tokenizer_path: str = Field(default="", description="sagemaker: tokenizer.json for exact CountTokens.")
    sagemaker_check_status: bool = Field(
        default=True,
        description="sagemaker: health = DescribeEndpoint says the endpoint serves (InService, Updating, ...; "
        "needs that IAM permission).",
    )
    sagemaker_status_ttl_s: float = Field(
        default=30.0,
        ge=0,
        description="sagemaker: health checks reuse a DescribeEndpoint answer this long (one call at a time).",
    )
    sagemaker_max_input_tokens: int = Field(
        default=0, ge=0, description="sagemaker: prompt limit override; 0: the deployed container's MAX_INPUT_TOKENS."
    )
    sagemaker_max_total_tokens: int = Field(
        default=0, ge=0, description="sagemaker: total limit override; 0: the deployed container's MAX_TOTAL_TOKENS."
    )
    sagemaker_timeout_s: float = Field(default=60.0, description="sagemaker: connect and read timeout.")
    openai_base_url: str = Field(
        default="http://127.0.0.1:8000/v1",
        description="openai: API base URL, ending in /v1 (vLLM, SGLang, llama.cpp server, Ollama, hosted).",
    )
    openai_api_key: SecretStr | None = Field(default=None, description="openai: API key (sent as a bearer token).")
    openai_model: str = Field(
        default="", description="openai: model name to request; default: the first of /v1/models."
    )
    openai_adapters: str = Field(
        default="",
        description="openai: LoRA adapters served, comma-separated `name` (vLLM/SGLang: its model name) or "
        "`name=id` (llama.cpp: its --lora index; default: the position); default: vLLM's LoRA modules.",
    )
    openai_timeout_s: float = Field(default=120.0, gt=0, description="openai: connect and between-tokens timeout.")
    openai_max_retries: int = Field(
        default=0, ge=0, description="openai: the SDK's retries of a failed call (0: the callers retry)."
    )
    remote_max_input_tokens: int = Field(
        default=2048,
        description="tgi/sagemaker/openai: prompt limit when the server or deployment does not say one.",
    )
    remote_max_total_tokens: int = Field(
        default=4096, description="tgi/sagemaker/openai: total limit when the server or deployment does not say one."
    )

    echo_token_delay_s: float = Field(default=0.0, description="echo: delay between tokens.")

    @field_validator("lora_adapters")
    @classmethod
    def _check_lora_adapters(cls, value: str) -> str:
        parse_lora_adapters(value)  # raises ValueError on a malformed list
        return value

    @field_validator("tgi_adapters")
    @classmethod
    def _check_tgi_adapters(cls, value: str) -> str:
        parse_names(value)
        return value


def parse_lora_adapters(spec: str) -> dict[str, tuple[str, float]]:
    """LLM_LORA_ADAPTERS as {name: (path, scale)}: `name=path.gguf[@scale]`, comma-separated."""
    adapters: dict[str, tuple[str, float]] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, target = (s.strip() for s in item.partition("="))
        if not sep or not name or not target:
            raise ValueError(f"{item!r}: expected name=path.gguf[@scale]")
        path, _, scale = target.rpartition("@") if "@" in target else (target, "", "1")
        try:
            value = float(scale)
        except ValueError:
            raise ValueError(f"{item!r}: the scale after @ must be a number") from None
        if name in adapters:
            raise ValueError(f"adapter {name!r} is listed twice")
        adapters[name] = (path.strip(), value)
    return adapters


def parse_names(spec: str) -> tuple[str, ...]:
    """A comma-separated list of names (LLM_TGI_ADAPTERS), without blanks; duplicates are an error."""
    names = tuple(filter(None, (part.strip() for part in spec.split(","))))
    if len(set(names)) != len(names):
        raise ValueError("an adapter is listed twice")
    return names
