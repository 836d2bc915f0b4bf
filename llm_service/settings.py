"""LLM service configuration: environment variables with the prefix LLM_ (see the README's table)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every setting of the LLM service, with its documented default."""

    model_config = SettingsConfigDict(env_prefix="LLM_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 50052
    metrics_port: int = Field(9102, description="Prometheus /metrics HTTP port; 0 disables it.")
    backend: Literal["embedded", "tgi", "sagemaker", "echo"] = "embedded"
    model_id: str = Field("", description="Model id reported to clients; defaults to the backend's own.")

    # Admission control: generations in flight, and a bounded wait queue in front of them.
    max_concurrent: int = Field(4, ge=1)
    max_queued: int = Field(32, ge=0)
    queue_timeout_s: float = Field(30.0, gt=0)
    shutdown_grace_s: float = Field(20.0, ge=0, description="In-flight streams get this long to finish.")
    shutdown_drain_s: float = Field(0.5, ge=0, description="NOT_SERVING this long before refusing calls.")
    health_interval_s: float = Field(5.0, gt=0)

    # Defaults applied to unset generation parameters.
    default_max_new_tokens: int = 256
    default_temperature: float = 0.7

    # embedded (xllamacpp): the packaged SmolLM2-135M-Instruct unless a GGUF path or HF repo is given.
    model_path: str = Field("", description="Path of a GGUF file.")
    hf_repo: str = Field("", description="Hugging Face repo id of a GGUF model (fetched into the HF cache).")
    hf_file: str = Field("", description="GGUF file name in hf_repo.")
    n_parallel: int = Field(4, ge=1, description="llama.cpp slots (continuous batching).")
    ctx_per_slot: int = Field(2048, ge=128, description="Context tokens per slot = max_total_tokens.")
    max_input_tokens: int = Field(1536, ge=16)
    n_threads: int = Field(2, ge=1, description="CPU threads for llama.cpp.")

    # tgi
    tgi_url: str = "http://127.0.0.1:8080"
    tgi_timeout_s: float = 120.0

    # sagemaker (AWS credentials and region the usual boto3 way)
    sagemaker_endpoint_name: str = ""
    sagemaker_inference_component: str = ""
    sagemaker_region: str = ""
    sagemaker_endpoint_url: str = Field("", description="Override of the runtime URL (tests, VPC endpoints).")
    sagemaker_tokenizer_path: str = Field("", description="tokenizer.json for exact CountTokens.")
    remote_max_input_tokens: int = 2048
    remote_max_total_tokens: int = 4096

    # echo (tests and benchmarks): emits tokens as fast as it can, or with a delay.
    echo_token_delay_s: float = 0.0
