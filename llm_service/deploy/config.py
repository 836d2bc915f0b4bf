"""Deployment settings (env prefix LLMTWIN_SM_) and the hardware presets they start from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The Hugging Face TGI DLC (TGI 3.3.6). 763104351884 hosts it in most commercial regions; opt-in regions
# (af-south-1, ap-east-1, eu-south-1, me-south-1, ...) use other accounts: set LLMTWIN_SM_IMAGE_URI there.
DEFAULT_IMAGE_URI = (
    "763104351884.dkr.ecr.{region}.amazonaws.com/huggingface-pytorch-tgi-inference:"
    "2.7.0-tgi3.3.6-gpu-py311-cu124-ubuntu22.04"
)

PresetName = Literal["8b-a10g", "30b-a100"]


@dataclass(frozen=True)
class Preset:
    """A model size matched to an instance type, with the TGI settings that fit its GPU memory."""

    model_id: str
    instance_type: str
    gpus_per_instance: int
    gpus_per_copy: int  # SM_NUM_GPUS (tensor-parallel shards) and the accelerators one copy reserves
    min_memory_mb: int  # host RAM one copy reserves
    startup_timeout_s: int  # weights download + load + warm-up before /ping must answer
    tgi_env: dict[str, str]


PRESETS: dict[str, Preset] = {
    # The book's deployment: 8-bit bitsandbytes puts the 8B weights at ~9 GB on the A10G's 24 GB, leaving
    # room for a 16k-token KV budget (~2 GB for Llama-3.1-8B) so a few full-length requests batch together.
    "8b-a10g": Preset(
        model_id="mlabonne/TwinLlama-3.1-8B-DPO",
        instance_type="ml.g5.2xlarge",
        gpus_per_instance=1,
        gpus_per_copy=1,
        min_memory_mb=5 * 1024,
        startup_timeout_s=900,
        tgi_env={
            "HF_MODEL_QUANTIZE": "bitsandbytes",
            "MAX_INPUT_LENGTH": "2048",
            "MAX_TOTAL_TOKENS": "4096",
            "MAX_BATCH_TOTAL_TOKENS": "16384",
        },
    ),
    # A 32B model in bf16 (~65 GB) sharded over the 8 A100-40GB of one p4d: no quantization needed, so no
    # quality loss and no pre-quantized (AWQ) checkpoint to maintain; ~250 GB stays free for the KV cache.
    "30b-a100": Preset(
        model_id="Qwen/Qwen2.5-32B-Instruct",
        instance_type="ml.p4d.24xlarge",
        gpus_per_instance=8,
        gpus_per_copy=8,
        min_memory_mb=96 * 1024,
        startup_timeout_s=1800,
        tgi_env={
            "MAX_INPUT_LENGTH": "4096",
            "MAX_TOTAL_TOKENS": "8192",
            "MAX_BATCH_TOTAL_TOKENS": "65536",
        },
    ),
}


class DeploySettings(BaseSettings):
    """What to deploy where; every field reads LLMTWIN_SM_<FIELD> (container_env as a JSON object)."""

    model_config = SettingsConfigDict(env_prefix="LLMTWIN_SM_", extra="ignore")

    role_arn: str = Field(
        default="",
        pattern=r"^(arn:aws[a-z-]*:iam::\d{12}:role/.+)?$",
        description="IAM execution role SageMaker assumes (required to deploy).",
    )
    region: str = Field(default="eu-central-1", description="AWS region.")
    # Resource names derive from it with suffixes, within SageMaker's 63-character limit.
    endpoint_name: str = Field(
        default="llmtwin",
        pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,39}$",
        description="Endpoint name; model, config and component names derive from it.",
    )
    preset: PresetName = Field(default="8b-a10g", description="8b-a10g (ml.g5.2xlarge) or 30b-a100 (ml.p4d.24xlarge).")
    model_id: str | None = Field(default=None, description="Hugging Face model id; default: the preset's.")
    hf_token: SecretStr | None = Field(default=None, description="Hugging Face token for gated or private models.")
    instance_type: str | None = Field(default=None, description="Instance type; default: the preset's.")
    instance_count: int | None = Field(default=None, ge=1, description="Initial instances; default: the preset's.")
    max_instance_count: int | None = Field(default=None, ge=1, description="Managed instance scaling ceiling.")
    image_uri: str | None = Field(default=None, description="TGI container image; default: the HF TGI DLC.")
    container_env: dict[str, str] = Field(default_factory=dict, description="Extra container env (JSON object).")
    min_copies: int = Field(default=1, ge=1, description="Autoscaling: fewest model copies.")
    max_copies: int = Field(default=2, ge=1, description="Autoscaling: most model copies.")
    target_invocations_per_copy: float = Field(
        default=10.0, gt=0, description="Autoscaling target: invocations per copy per minute."
    )
    startup_health_check_timeout_s: int | None = Field(
        default=None, ge=60, le=3600, description="Time the container may take to load the model."
    )
    poll_interval_s: float = Field(default=30.0, gt=0, description="Status polling period while waiting.")

    @model_validator(mode="after")
    def _copies_in_order(self) -> Self:
        if self.max_copies < self.min_copies:
            raise ValueError("max_copies must be >= min_copies")
        return self

    @property
    def preset_spec(self) -> Preset:
        """The selected preset."""
        return PRESETS[self.preset]
