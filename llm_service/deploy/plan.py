"""Every request one deployment sends, built from settings alone (what --dry-run prints)."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

from llm_service.deploy.config import DEFAULT_IMAGE_URI, DeploySettings

VARIANT_NAME = "AllTraffic"
SCALABLE_DIMENSION = "sagemaker:inference-component:DesiredCopyCount"
# Scale out fast (a copy takes minutes to start), scale in slowly so bursts do not flap.
SCALE_OUT_COOLDOWN_S = 60
SCALE_IN_COOLDOWN_S = 300
_TOKEN_KEYS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
_ROLE_PLACEHOLDER = "<LLMTWIN_SM_ROLE_ARN>"

Payload = dict[str, Any]


@dataclass(frozen=True)
class DeployPlan:
    """Resource names and request payloads for one endpoint with one inference component."""

    region: str
    endpoint_name: str
    model_name: str
    endpoint_config_name: str
    inference_component_name: str
    scaling_policy_name: str
    create_model: Payload = field(repr=False)  # carries the HF token
    create_endpoint_config: Payload
    create_endpoint: Payload
    create_inference_component: Payload
    register_scalable_target: Payload
    put_scaling_policy: Payload

    @property
    def resource_id(self) -> str:
        """The application-autoscaling id of the inference component."""
        return f"inference-component/{self.inference_component_name}"

    def deploy_requests(self, *, redact: bool = True) -> dict[str, Payload]:
        """Operation name → payload, in the order deploy() sends them; HF tokens masked unless asked."""
        requests = {
            "CreateModel": self.create_model,
            "CreateEndpointConfig": self.create_endpoint_config,
            "CreateEndpoint": self.create_endpoint,
            "CreateInferenceComponent": self.create_inference_component,
            "RegisterScalableTarget": self.register_scalable_target,
            "PutScalingPolicy": self.put_scaling_policy,
        }
        requests = copy.deepcopy(requests)
        if redact:
            env = requests["CreateModel"]["PrimaryContainer"]["Environment"]
            for key in _TOKEN_KEYS:
                if key in env:
                    env[key] = "***"
        return requests

    def teardown_requests(self) -> dict[str, Payload]:
        """Operation name → payload, in the order teardown() sends them (reverse of creation)."""
        target = {
            "ServiceNamespace": "sagemaker",
            "ResourceId": self.resource_id,
            "ScalableDimension": SCALABLE_DIMENSION,
        }
        return {
            "DeleteScalingPolicy": {"PolicyName": self.scaling_policy_name, **target},
            "DeregisterScalableTarget": target,
            "DeleteInferenceComponent": {"InferenceComponentName": self.inference_component_name},
            "DeleteEndpoint": {"EndpointName": self.endpoint_name},
            "DeleteEndpointConfig": {"EndpointConfigName": self.endpoint_config_name},
            "DeleteModel": {"ModelName": self.model_name},
        }

    def service_env(self) -> dict[str, str]:
        """Environment that points the LLM service at this endpoint."""
        return {
            "LLM_BACKEND": "sagemaker",
            "LLM_SAGEMAKER_ENDPOINT_NAME": self.endpoint_name,
            "LLM_SAGEMAKER_INFERENCE_COMPONENT": self.inference_component_name,
            "AWS_REGION": self.region,
        }


def container_env(settings: DeploySettings) -> dict[str, str]:
    """The TGI container's environment: preset limits, model, shards, token, then user overrides."""
    preset = settings.preset_spec
    env = {
        "HF_MODEL_ID": settings.model_id or preset.model_id,
        "SM_NUM_GPUS": str(preset.gpus_per_copy),
        **preset.tgi_env,
    }
    if settings.hf_token is not None:
        # TGI's launcher reads HF_TOKEN; the DLC docs and the book use the older name: set both.
        token = settings.hf_token.get_secret_value()
        env.update(dict.fromkeys(_TOKEN_KEYS, token))
    env.update(settings.container_env)
    return env


def build_plan(settings: DeploySettings) -> DeployPlan:
    """Turn settings into the exact requests; no AWS call, so it also serves --dry-run."""
    preset = settings.preset_spec
    name = settings.endpoint_name
    role = settings.role_arn or _ROLE_PLACEHOLDER
    model_name, config_name, ic_name = f"{name}-model", f"{name}-config", f"{name}-ic"
    policy_name = f"{ic_name}-invocations-per-copy"
    # Enough instances for the copies: the endpoint's managed scaling adds instances when autoscaling
    # asks for copies that no longer fit.
    copies_per_instance = max(1, preset.gpus_per_instance // preset.gpus_per_copy)
    instances = settings.instance_count or math.ceil(settings.min_copies / copies_per_instance)
    max_instances = settings.max_instance_count or max(instances, math.ceil(settings.max_copies / copies_per_instance))
    resource_id = f"inference-component/{ic_name}"
    return DeployPlan(
        region=settings.region,
        endpoint_name=name,
        model_name=model_name,
        endpoint_config_name=config_name,
        inference_component_name=ic_name,
        scaling_policy_name=policy_name,
        create_model={
            "ModelName": model_name,
            "ExecutionRoleArn": role,
            "PrimaryContainer": {
                "Image": settings.image_uri or DEFAULT_IMAGE_URI.format(region=settings.region),
                "Environment": container_env(settings),
            },
        },
        # Inference-component endpoints: no ModelName on the variant (the component brings it), the role
        # on the config, and managed instance scaling so copies can grow past the initial instances.
        create_endpoint_config={
            "EndpointConfigName": config_name,
            "ExecutionRoleArn": role,
            "ProductionVariants": [
                {
                    "VariantName": VARIANT_NAME,
                    "InstanceType": settings.instance_type or preset.instance_type,
                    "InitialInstanceCount": instances,
                    "ManagedInstanceScaling": {
                        "Status": "ENABLED",
                        "MinInstanceCount": instances,
                        "MaxInstanceCount": max_instances,
                    },
                    # LLM requests last seconds: send each to the copy with the fewest in flight.
                    "RoutingConfig": {"RoutingStrategy": "LEAST_OUTSTANDING_REQUESTS"},
                }
            ],
        },
        create_endpoint={"EndpointName": name, "EndpointConfigName": config_name},
        create_inference_component={
            "InferenceComponentName": ic_name,
            "EndpointName": name,
            "VariantName": VARIANT_NAME,
            "Specification": {
                "ModelName": model_name,
                "StartupParameters": {
                    "ContainerStartupHealthCheckTimeoutInSeconds": settings.startup_health_check_timeout_s
                    or preset.startup_timeout_s,
                },
                "ComputeResourceRequirements": {
                    "NumberOfAcceleratorDevicesRequired": preset.gpus_per_copy,
                    "MinMemoryRequiredInMb": preset.min_memory_mb,
                },
            },
            "RuntimeConfig": {"CopyCount": settings.min_copies},
        },
        register_scalable_target={
            "ServiceNamespace": "sagemaker",
            "ResourceId": resource_id,
            "ScalableDimension": SCALABLE_DIMENSION,
            "MinCapacity": settings.min_copies,
            "MaxCapacity": settings.max_copies,
        },
        put_scaling_policy={
            "PolicyName": policy_name,
            "ServiceNamespace": "sagemaker",
            "ResourceId": resource_id,
            "ScalableDimension": SCALABLE_DIMENSION,
            "PolicyType": "TargetTrackingScaling",
            "TargetTrackingScalingPolicyConfiguration": {
                "PredefinedMetricSpecification": {
                    "PredefinedMetricType": "SageMakerInferenceComponentInvocationsPerCopy"
                },
                "TargetValue": settings.target_invocations_per_copy,
                "ScaleOutCooldown": SCALE_OUT_COOLDOWN_S,
                "ScaleInCooldown": SCALE_IN_COOLDOWN_S,
            },
        },
    )
