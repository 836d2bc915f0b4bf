"""Deploy the LLM Twin model to SageMaker (HF TGI or vLLM DLC, LoRA adapters), keep it in sync, tear it down."""

from llm_service.deploy.config import PROFILES, DeploySettings, Profile, image_uri_for
from llm_service.deploy.plan import Call, DeployPlan, build_plan
from llm_service.deploy.sagemaker import DeployError, ResourceState, SageMakerDeployer

__all__ = [
    "PROFILES",
    "Call",
    "DeployError",
    "DeployPlan",
    "DeploySettings",
    "Profile",
    "ResourceState",
    "SageMakerDeployer",
    "build_plan",
    "image_uri_for",
]
