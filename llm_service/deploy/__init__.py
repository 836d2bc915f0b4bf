"""Deploy the LLM Twin model to a SageMaker endpoint (Hugging Face TGI DLC) and tear it down again."""

from llm_service.deploy.config import PRESETS, DeploySettings, Preset
from llm_service.deploy.plan import DeployPlan, build_plan
from llm_service.deploy.sagemaker import DeployError, ResourceState, SageMakerDeployer

__all__ = [
    "PRESETS",
    "DeployError",
    "DeployPlan",
    "DeploySettings",
    "Preset",
    "ResourceState",
    "SageMakerDeployer",
    "build_plan",
]
