"""Builds the configured backend."""

from __future__ import annotations

import os
from pathlib import Path

from llm_service.backends.base import Backend
from llm_service.settings import Settings, parse_lora_adapters, parse_names


def default_threads() -> int:
    """All usable cores but one, at most 8: llama.cpp's threads spin, and on a busy machine oversubscribing
    them is ruinous (measured on 2 cores under load: 10x slower with 2 threads than with 1)."""
    return max(1, min(8, len(os.sched_getaffinity(0)) - 1))


def make_backend(settings: Settings) -> Backend:
    """The backend named by LLM_BACKEND, configured from the settings."""
    if settings.backend == "embedded":
        from llm_service.backends.embedded import PACKAGED_ID, EmbeddedBackend, resolve_model_path

        path = resolve_model_path(settings.model_path, settings.hf_repo, settings.hf_file)
        return EmbeddedBackend(
            path,
            model_id=settings.model_id or settings.hf_repo or (path.name if settings.model_path else PACKAGED_ID),
            n_parallel=settings.n_parallel,
            ctx_per_slot=settings.ctx_per_slot,
            max_input_tokens=settings.max_input_tokens,
            n_threads=settings.n_threads or default_threads(),
            sampling={
                "repeat_last_n": settings.repeat_last_n,
                "dry_multiplier": settings.dry_multiplier,
                "dry_base": settings.dry_base,
                "dry_allowed_length": settings.dry_allowed_length,
            },
            n_cache_reuse=settings.n_cache_reuse,
            cache_prompt=settings.cache_prompt,
            adapters={
                name: (Path(path), scale) for name, (path, scale) in parse_lora_adapters(settings.lora_adapters).items()
            },
        )
    if settings.backend == "tgi":
        from llm_service.backends.tgi import TgiBackend

        return TgiBackend(
            settings.tgi_url,
            model_id=settings.model_id,
            max_input_tokens=settings.remote_max_input_tokens,
            max_total_tokens=settings.remote_max_total_tokens,
            timeout_s=settings.tgi_timeout_s,
            headers={"Authorization": f"Bearer {settings.tgi_token.get_secret_value()}"}
            if settings.tgi_token
            else None,
            adapters=parse_names(settings.tgi_adapters),
        )
    if settings.backend == "openai":
        from llm_service.backends.openai import OpenAIBackend
        from llm_service.backends.openai_payload import parse_adapter_ids

        return OpenAIBackend(
            settings.openai_base_url,
            api_key=settings.openai_api_key.get_secret_value() if settings.openai_api_key else "",
            model=settings.openai_model,
            model_id=settings.model_id,
            adapters=parse_adapter_ids(settings.openai_adapters),
            max_input_tokens=settings.remote_max_input_tokens,
            max_total_tokens=settings.remote_max_total_tokens,
            timeout_s=settings.openai_timeout_s,
            max_retries=settings.openai_max_retries,
        )
    if settings.backend == "sagemaker":
        from llm_service.backends.sagemaker import SageMakerBackend, parse_adapters

        return SageMakerBackend(
            settings.sagemaker_endpoint_name,
            inference_component_name=settings.sagemaker_inference_component or None,
            payload=settings.sagemaker_payload,
            adapters=parse_adapters(settings.sagemaker_adapters),
            region=settings.sagemaker_region or None,
            endpoint_url=settings.sagemaker_endpoint_url or None,
            model_id=settings.model_id,
            max_input_tokens=settings.sagemaker_max_input_tokens or None,
            max_total_tokens=settings.sagemaker_max_total_tokens or None,
            fallback_max_input_tokens=settings.remote_max_input_tokens,
            fallback_max_total_tokens=settings.remote_max_total_tokens,
            tokenizer_path=settings.sagemaker_tokenizer_path or None,
            check_endpoint_status=settings.sagemaker_check_status,
            status_ttl_s=settings.sagemaker_status_ttl_s,
            timeout_s=settings.sagemaker_timeout_s,
        )
    from llm_service.backends.echo import EchoBackend

    # Benchmarks stream long runs through it: its total limit is not a model's.
    return EchoBackend(token_delay_s=settings.echo_token_delay_s, max_total_tokens=1 << 20)
