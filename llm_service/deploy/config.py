"""Deployment settings (env prefix LLMTWIN_SM_), the containers, and the hardware profiles they start from."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal, Self

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The serving containers, pinned, so a deploy does not change under us when a new DLC ships. The SageMaker
# SDK resolves the same URIs (`image_uris.retrieve("huggingface-llm", ...)` for TGI, `"huggingface-vllm"` for
# vLLM: sagemaker-core's image_uri_config/huggingface-vllm.json, version 0.27.1); we keep the table here
# instead of installing it. Most commercial regions pull from 763104351884; opt-in regions have their own
# accounts (the same ones in both tables). Anything else (AWS's LMI, another version): LLMTWIN_SM_IMAGE_URI.
ContainerName = Literal["tgi", "vllm"]
IMAGES: dict[str, tuple[str, str]] = {  # container -> (repository, tag)
    # Hugging Face TGI DLC, TGI 3.3.6: the last TGI DLC (TGI is in maintenance mode).
    "tgi": ("huggingface-pytorch-tgi-inference", "2.7.0-tgi3.3.6-gpu-py311-cu124-ubuntu22.04"),
    # Hugging Face vLLM DLC, vLLM 0.27.1 (OpenAI API; flags as SM_VLLM_* env; CUDA 13: see VLLM_AMI_VERSION).
    "vllm": ("huggingface-vllm", "0.27.1-transformers5.10.2-gpu-py312-cu130-ubuntu22.04"),
}
IMAGE_REPOSITORY, IMAGE_TAG = IMAGES["tgi"]  # the names before the container choice
# CUDA 13 (cu130) images need the NVIDIA driver of this inference AMI (ProductionVariant.InferenceAmiVersion).
VLLM_AMI_VERSION = "al2-ami-sagemaker-inference-gpu-3-1"
_DLC_ACCOUNTS: dict[str, str] = {
    **dict.fromkeys(
        (
            "us-east-1", "us-east-2", "us-west-1", "us-west-2", "ca-central-1", "sa-east-1",
            "eu-central-1", "eu-north-1", "eu-west-1", "eu-west-2", "eu-west-3",
            "ap-northeast-1", "ap-northeast-2", "ap-south-1", "ap-southeast-1", "ap-southeast-2",
        ),
        "763104351884",
    ),
    # The registries of the SageMaker SDK's image_uri_config/huggingface-llm.json.
    "af-south-1": "626614931356",
    "ap-east-1": "871362719292",
    "ap-northeast-3": "364406365360",
    "ap-south-2": "772153158452",
    "ap-southeast-3": "907027046896",
    "ap-southeast-4": "457447274322",
    "ca-west-1": "204538143572",
    "eu-central-2": "380420809688",
    "eu-south-1": "692866216735",
    "eu-south-2": "503227376785",
    "il-central-1": "780543022126",
    "me-central-1": "914824155844",
    "me-south-1": "217643126080",
}  # fmt: skip
# Regions of huggingface-vllm.json that huggingface-llm.json (TGI) does not list.
_VLLM_ONLY_ACCOUNTS: dict[str, str] = {
    "ap-east-2": "975050140332",
    "ap-southeast-5": "550225433462",
    "ap-southeast-6": "633930458069",
    "ap-southeast-7": "590183813437",
    "mx-central-1": "637423239942",
}


def image_uri_for(region: str, container: ContainerName = "tgi") -> str:
    """The pinned DLC image of `container` in `region`; ValueError for a region without a pinned account."""
    accounts = _DLC_ACCOUNTS | _VLLM_ONLY_ACCOUNTS if container == "vllm" else _DLC_ACCOUNTS
    try:
        account = accounts[region]
    except KeyError:
        raise ValueError(f"no pinned {container} image for region {region}: set LLMTWIN_SM_IMAGE_URI") from None
    repository, tag = IMAGES[container]
    return f"{account}.dkr.ecr.{region}.amazonaws.com/{repository}:{tag}"


# Adapter names become inference component names ("<endpoint>-ic-<name>", at most 63 characters).
ADAPTER_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,18}$")


ProfileName = Literal["a10g-8b", "a100-30b"]
# Names the first version of this tool used; still accepted.
PROFILE_ALIASES = {"8b-a10g": "a10g-8b", "30b-a100": "a100-30b"}


@dataclass(frozen=True)
class Profile:
    """A model size matched to an instance type, with the TGI limits that fit its GPU memory."""

    model_id: str
    instance_type: str
    gpus_per_instance: int
    gpus_per_copy: int  # SM_NUM_GPUS (tensor-parallel shards) and the accelerators one copy reserves
    cpus_per_copy: int  # host cores one copy reserves (tokenizer, router, HTTP)
    memory_mb_per_copy: int  # host RAM one copy reserves
    quantize: str | None  # TGI: HF_MODEL_QUANTIZE
    vllm_quantize: str | None  # vLLM: SM_VLLM_QUANTIZATION (its --quantization)
    max_input_tokens: int
    max_total_tokens: int
    max_batch_total_tokens: int
    startup_timeout_s: int  # weights download + load + warm-up before /ping must answer
    prompt_format: Literal["alpaca", "chat"]  # the format the model was trained on: the RAG service's RAG_PROMPT_FORMAT


PROFILES: dict[str, Profile] = {
    # The book's deployment. 8-bit bitsandbytes puts Llama-3.1-8B at ~9.1 GB of the A10G's 24 GB; a KV
    # token costs 128 KiB, so the 16k-token batch budget is 2 GiB: four full-length requests batch together
    # with room to spare (arithmetic: docs/deployment.md). ml.g5.2xlarge has 8 vCPUs and 32 GiB.
    "a10g-8b": Profile(
        model_id="mlabonne/TwinLlama-3.1-8B-DPO",
        instance_type="ml.g5.2xlarge",
        gpus_per_instance=1,
        gpus_per_copy=1,
        cpus_per_copy=4,
        memory_mb_per_copy=8 * 1024,
        quantize="bitsandbytes",
        # vLLM: bf16 (16 GB) fits the A10G and keeps the model's quality; 4096-token sequences leave the
        # KV cache ~5 GB at --gpu-memory-utilization 0.9 (~40k tokens, ten full-length requests).
        vllm_quantize=None,
        max_input_tokens=2048,
        max_total_tokens=4096,
        max_batch_total_tokens=16384,
        # ~16 GB of weights from the Hub (2-3 min), bitsandbytes or CUDA-graph warm-up (1-3 min): 15 min leaves
        # room for a slow Hub; vLLM's start is in the same range.
        startup_timeout_s=900,
        prompt_format="alpaca",  # TwinLlama was fine-tuned on Alpaca-format instructions
    ),
    # A 32B model in bf16 (~65 GB) sharded over the 8 A100-40GB of one p4d: no quantization needed, so no
    # quality loss and no pre-quantized checkpoint to maintain; ~250 GB stays free for the KV cache.
    "a100-30b": Profile(
        model_id="Qwen/Qwen2.5-32B-Instruct",
        instance_type="ml.p4d.24xlarge",
        gpus_per_instance=8,
        gpus_per_copy=8,
        cpus_per_copy=32,
        memory_mb_per_copy=256 * 1024,
        quantize=None,
        vllm_quantize=None,
        max_input_tokens=4096,
        max_total_tokens=8192,
        max_batch_total_tokens=65536,
        startup_timeout_s=1800,
        prompt_format="chat",  # an instruct model: its own chat template
    ),
}


class DeploySettings(BaseSettings):
    """What to deploy where; every field reads LLMTWIN_SM_<FIELD> (container_env as a JSON object)."""

    model_config = SettingsConfigDict(env_prefix="LLMTWIN_SM_", extra="ignore", populate_by_name=True)

    role_arn: str = Field(
        default="",
        pattern=r"^(arn:aws[a-z-]*:iam::\d{12}:role/.+)?$",
        description="IAM execution role SageMaker assumes (required for up).",
    )
    region: str = Field(default="eu-central-1", description="AWS region.")
    # Resource names derive from it with suffixes, within SageMaker's 63-character limit.
    endpoint_name: str = Field(
        default="llmtwin",
        pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,39}$",
        description="Endpoint name; model, config and component names derive from it.",
    )
    profile: ProfileName = Field(
        default="a10g-8b",
        validation_alias=AliasChoices("LLMTWIN_SM_PROFILE", "LLMTWIN_SM_PRESET"),  # PRESET: the old name
        description="a10g-8b (ml.g5.2xlarge, 8B 8-bit) or a100-30b (ml.p4d.24xlarge, 32B bf16).",
    )
    container: ContainerName = Field(
        default="tgi",
        description="Serving container: tgi (HF TGI DLC, TGI payloads) or vllm (HF vLLM DLC, OpenAI payloads).",
    )
    model_id: str | None = Field(default=None, description="Hugging Face model id (HF_MODEL_ID); default: profile's.")
    prompt_format: Literal["alpaca", "chat"] | None = Field(
        default=None, description="The model's prompt format, for the RAG service; default: the profile's."
    )
    model_revision: str | None = Field(
        default=None, description="Model revision (HF_MODEL_REVISION): pin a commit sha for reproducible deploys."
    )
    hf_token: SecretStr | None = Field(default=None, description="Hugging Face token for gated or private models.")
    instance_type: str | None = Field(default=None, description="Instance type; default: the profile's.")
    instance_count: int | None = Field(default=None, ge=1, description="Initial instances; default: enough for min.")
    max_instance_count: int | None = Field(default=None, ge=1, description="Managed instance scaling ceiling.")
    image_uri: str | None = Field(default=None, description="Container image; default: the container's pinned DLC.")
    num_gpus: int | None = Field(
        default=None, ge=1, description="GPUs per copy (SM_NUM_GPUS, SM_VLLM_TENSOR_PARALLEL_SIZE); default: profile's."
    )
    quantize: str | None = Field(
        default=None,
        description="HF_MODEL_QUANTIZE / SM_VLLM_QUANTIZATION (bitsandbytes, awq, fp8, ...; 'none': off); "
        "default: the profile's for the container.",
    )
    max_input_tokens: int | None = Field(
        default=None, ge=1, description="tgi: MAX_INPUT_TOKENS (vllm: no separate limit); default: profile's."
    )
    max_total_tokens: int | None = Field(
        default=None, ge=2, description="MAX_TOTAL_TOKENS / SM_VLLM_MAX_MODEL_LEN; default: profile's."
    )
    max_batch_total_tokens: int | None = Field(
        default=None, ge=2, description="MAX_BATCH_TOTAL_TOKENS; default: profile's."
    )
    container_env: dict[str, str] = Field(default_factory=dict, description="Extra container env (JSON object).")
    adapters: dict[str, str] = Field(
        default_factory=dict,
        description="LoRA adapters as inference components on the base one: JSON {name: s3:// artifact URL}.",
    )
    min_copies: int = Field(default=1, ge=1, description="Autoscaling: fewest model copies.")
    max_copies: int = Field(default=2, ge=1, description="Autoscaling: most model copies.")
    target_invocations_per_copy: float = Field(
        default=10.0, gt=0, description="Autoscaling target: invocations per copy per minute."
    )
    startup_health_check_timeout_s: int | None = Field(
        default=None, ge=60, le=3600, description="Time the container may take to load the model."
    )
    poll_interval_s: float = Field(default=30.0, gt=0, description="Status polling period while waiting.")
    wait_timeout_s: float = Field(default=3600.0, gt=0, description="Longest wait for one resource's state.")

    @field_validator("profile", mode="before")
    @classmethod
    def _old_profile_names(cls, value: Any) -> Any:
        return PROFILE_ALIASES.get(value, value) if isinstance(value, str) else value

    @field_validator("adapters")
    @classmethod
    def _adapter_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name, url in value.items():
            if not ADAPTER_NAME.match(name):
                raise ValueError(f"adapter name {name!r}: letters, digits and dashes, at most 19 characters")
            if not url.startswith("s3://"):
                raise ValueError(f"adapter {name}: the artifact URL must be an s3:// URL, not {url!r}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.max_copies < self.min_copies:
            raise ValueError("max_copies must be >= min_copies")
        if self.tgi_limits[1] <= self.tgi_limits[0]:
            raise ValueError("max_total_tokens must be > max_input_tokens")
        return self

    @property
    def profile_spec(self) -> Profile:
        """The selected profile."""
        return PROFILES[self.profile]

    @property
    def tgi_limits(self) -> tuple[int, int, int]:
        """(max input, max total, max batch total) tokens after overrides."""
        p = self.profile_spec
        return (
            self.max_input_tokens or p.max_input_tokens,
            self.max_total_tokens or p.max_total_tokens,
            self.max_batch_total_tokens or p.max_batch_total_tokens,
        )
