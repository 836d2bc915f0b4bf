"""Deployment settings (env prefix LLMTWIN_SM_) and the hardware profiles they start from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Self

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The Hugging Face TGI DLC (TGI 3.3.6), pinned, so a deploy does not change under us when a new DLC ships.
# The SageMaker SDK resolves the same URIs (`image_uris.retrieve("huggingface-tgi", ...)`); we keep the table
# here instead of installing it. Most commercial regions pull from 763104351884; opt-in regions have their
# own accounts. Anything else: set LLMTWIN_SM_IMAGE_URI.
IMAGE_REPOSITORY = "huggingface-pytorch-tgi-inference"
IMAGE_TAG = "2.7.0-tgi3.3.6-gpu-py311-cu124-ubuntu22.04"
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


def image_uri_for(region: str) -> str:
    """The pinned TGI DLC image in `region`; ValueError for a region without a pinned account."""
    try:
        account = _DLC_ACCOUNTS[region]
    except KeyError:
        raise ValueError(f"no pinned TGI image for region {region}: set LLMTWIN_SM_IMAGE_URI") from None
    return f"{account}.dkr.ecr.{region}.amazonaws.com/{IMAGE_REPOSITORY}:{IMAGE_TAG}"


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
    quantize: str | None  # HF_MODEL_QUANTIZE
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
        max_input_tokens=2048,
        max_total_tokens=4096,
        max_batch_total_tokens=16384,
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
    image_uri: str | None = Field(default=None, description="TGI container image; default: the pinned HF TGI DLC.")
    num_gpus: int | None = Field(default=None, ge=1, description="SM_NUM_GPUS per copy; default: the profile's.")
    quantize: str | None = Field(
        default=None, description="HF_MODEL_QUANTIZE (bitsandbytes, eetq, awq, ...; 'none': off); default: profile's."
    )
    max_input_tokens: int | None = Field(default=None, ge=1, description="MAX_INPUT_TOKENS; default: profile's.")
    max_total_tokens: int | None = Field(default=None, ge=2, description="MAX_TOTAL_TOKENS; default: profile's.")
    max_batch_total_tokens: int | None = Field(
        default=None, ge=2, description="MAX_BATCH_TOTAL_TOKENS; default: profile's."
    )
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
    wait_timeout_s: float = Field(default=3600.0, gt=0, description="Longest wait for one resource's state.")

    @field_validator("profile", mode="before")
    @classmethod
    def _old_profile_names(cls, value: Any) -> Any:
        return PROFILE_ALIASES.get(value, value) if isinstance(value, str) else value

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
