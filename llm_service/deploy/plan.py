"""Every request one deployment sends, built from settings alone (what `plan` prints).

Models and endpoint configs are immutable in SageMaker, so their names end in a digest of their content:
a changed setting yields a new name, which `up` creates and then switches to (UpdateEndpoint,
UpdateInferenceComponent). The endpoint, inference component and scaling policy keep stable names, the
ones the LLM service is pointed at. LoRA adapters are inference components on the base one
(Specification.BaseInferenceComponentName + the adapter's ArtifactUrl), named "<component>-<adapter>".
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from llm_service.deploy.config import VLLM_AMI_VERSION, DeploySettings, image_uri_for

VARIANT_NAME = "AllTraffic"
SCALABLE_DIMENSION = "sagemaker:inference-component:DesiredCopyCount"
# Scale out fast (a copy takes minutes to start), scale in slowly so bursts do not flap.
SCALE_OUT_COOLDOWN_S = 60
SCALE_IN_COOLDOWN_S = 300
TOKEN_KEYS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
MASK = "***"
_ROLE_PLACEHOLDER = "<LLMTWIN_SM_ROLE_ARN>"

Payload = dict[str, Any]
Service = Literal["sagemaker", "application-autoscaling"]


def redact(params: Payload) -> Payload:
    """A deep copy with Hugging Face tokens in a container environment masked."""
    params = copy.deepcopy(params)
    env = params.get("PrimaryContainer", {}).get("Environment", {})
    for key in TOKEN_KEYS:
        if key in env:
            env[key] = MASK
    return params


def _digest(payload: Payload) -> str:
    # Of the redacted payload: the token never feeds a name (rotate it by setting a new one and running
    # down/up, or by a changed container_env).
    return hashlib.sha256(json.dumps(redact(payload), sort_keys=True).encode()).hexdigest()[:8]


@dataclass(frozen=True)
class Call:
    """One AWS API call: which client, the operation as AWS spells it, and its parameters."""

    service: Service
    operation: str
    params: Payload = field(repr=False)  # CreateModel's carries the HF token

    def redacted(self) -> Payload:
        """{service, operation, params} with tokens masked: safe to print."""
        return {"service": self.service, "operation": self.operation, "params": redact(self.params)}


@dataclass(frozen=True)
class DeployPlan:
    """Resource names and request payloads for one endpoint with one inference component."""

    region: str
    endpoint_name: str
    model_name: str
    endpoint_config_name: str
    inference_component_name: str
    scaling_policy_name: str
    instance_type: str
    max_instances: int
    prompt_format: str  # the deployed model's, for the RAG service
    payload: str  # what the container speaks: "tgi" or "openai" (the LLM service's LLM_SAGEMAKER_PAYLOAD)
    create_model: Payload = field(repr=False)
    create_endpoint_config: Payload
    create_endpoint: Payload
    create_inference_component: Payload
    register_scalable_target: Payload
    put_scaling_policy: Payload
    create_adapters: dict[str, Payload] = field(default_factory=dict)  # adapter name -> its CreateInferenceComponent

    @property
    def adapter_components(self) -> dict[str, str]:
        """Adapter name -> its inference component's name."""
        return {name: params["InferenceComponentName"] for name, params in self.create_adapters.items()}

    @property
    def resource_id(self) -> str:
        """The application-autoscaling id of the inference component."""
        return f"inference-component/{self.inference_component_name}"

    @property
    def scalable_target(self) -> Payload:
        """The keys that identify the scalable target."""
        return {
            "ServiceNamespace": "sagemaker",
            "ResourceId": self.resource_id,
            "ScalableDimension": SCALABLE_DIMENSION,
        }

    def owns(self, name: str) -> bool:
        """Whether a model or endpoint config name is one this tool generates for this endpoint."""
        legacy = (f"{self.endpoint_name}-model", f"{self.endpoint_name}-config")  # before names had digests
        return name in legacy or name.startswith(tuple(f"{prefix}-" for prefix in legacy))

    def up_calls(self) -> list[Call]:
        """What `up` sends on an account where nothing exists yet, in order."""
        return [
            Call("sagemaker", "CreateModel", self.create_model),
            Call("sagemaker", "CreateEndpointConfig", self.create_endpoint_config),
            Call("sagemaker", "CreateEndpoint", self.create_endpoint),
            Call("sagemaker", "CreateInferenceComponent", self.create_inference_component),
            Call("application-autoscaling", "RegisterScalableTarget", self.register_scalable_target),
            Call("application-autoscaling", "PutScalingPolicy", self.put_scaling_policy),
            *(Call("sagemaker", "CreateInferenceComponent", params) for params in self.create_adapters.values()),
        ]

    def down_calls(self) -> list[Call]:
        """What `down` sends when everything of this plan exists: the reverse of creation (adapters first)."""
        adapters = [
            Call("sagemaker", "DeleteInferenceComponent", {"InferenceComponentName": name})
            for name in self.adapter_components.values()
        ]
        return [
            *adapters,
            Call(
                "application-autoscaling",
                "DeleteScalingPolicy",
                {"PolicyName": self.scaling_policy_name, **self.scalable_target},
            ),
            Call("application-autoscaling", "DeregisterScalableTarget", self.scalable_target),
            Call("sagemaker", "DeleteInferenceComponent", {"InferenceComponentName": self.inference_component_name}),
            Call("sagemaker", "DeleteEndpoint", {"EndpointName": self.endpoint_name}),
            Call("sagemaker", "DeleteEndpointConfig", {"EndpointConfigName": self.endpoint_config_name}),
            Call("sagemaker", "DeleteModel", {"ModelName": self.model_name}),
        ]

    def service_env(self) -> dict[str, str]:
        """Environment that points the LLM service at this endpoint."""
        env = {
            "LLM_BACKEND": "sagemaker",
            "LLM_SAGEMAKER_ENDPOINT_NAME": self.endpoint_name,
            "LLM_SAGEMAKER_INFERENCE_COMPONENT": self.inference_component_name,
            "LLM_SAGEMAKER_REGION": self.region,
            "LLM_SAGEMAKER_PAYLOAD": self.payload,
        }
        if self.create_adapters:
            env["LLM_SAGEMAKER_ADAPTERS"] = ",".join(f"{n}={c}" for n, c in self.adapter_components.items())
        return env

    def rag_env(self) -> dict[str, str]:
        """Environment the RAG service needs for this model: the prompt format it was trained on."""
        return {"RAG_PROMPT_FORMAT": self.prompt_format}


def container_env(settings: DeploySettings) -> dict[str, str]:
    """The container's environment: model, shards, limits, quantization, token, then user overrides."""
    if settings.container == "vllm":
        return _vllm_env(settings) | _token_env(settings) | settings.container_env
    profile = settings.profile_spec
    max_input, max_total, max_batch = settings.tgi_limits
    env = {"HF_MODEL_ID": settings.model_id or profile.model_id}
    if settings.model_revision:
        env["HF_MODEL_REVISION"] = settings.model_revision
    env |= {
        "SM_NUM_GPUS": str(settings.num_gpus or profile.gpus_per_copy),
        "MAX_INPUT_TOKENS": str(max_input),
        "MAX_TOTAL_TOKENS": str(max_total),
        "MAX_BATCH_TOTAL_TOKENS": str(max_batch),
    }
    quantize = settings.quantize or profile.quantize
    if quantize and quantize != "none":
        env["HF_MODEL_QUANTIZE"] = quantize
    return env | _token_env(settings) | settings.container_env


def _vllm_env(settings: DeploySettings) -> dict[str, str]:
    """The HF vLLM DLC's environment: every SM_VLLM_<FLAG> becomes vLLM's --<flag> (dashes as underscores)."""
    profile = settings.profile_spec
    env = {
        "HF_MODEL_ID": settings.model_id or profile.model_id,  # the DLC serves it unless SM_VLLM_MODEL says another
        "SM_VLLM_HOST": "0.0.0.0",  # vLLM binds localhost by default: SageMaker's /ping could not reach it
    }
    if settings.model_revision:
        env["SM_VLLM_REVISION"] = settings.model_revision
    env |= {
        "SM_VLLM_TENSOR_PARALLEL_SIZE": str(settings.num_gpus or profile.gpus_per_copy),
        # vLLM has one limit, prompt + generated tokens; a prompt may take all of it but one token.
        "SM_VLLM_MAX_MODEL_LEN": str(settings.tgi_limits[1]),
    }
    quantize = settings.quantize or profile.vllm_quantize
    if quantize and quantize != "none":
        env["SM_VLLM_QUANTIZATION"] = quantize
    if settings.adapters:  # adapter inference components are LoRA adapters loaded into this engine
        env |= {"SM_VLLM_ENABLE_LORA": "true", "SM_VLLM_MAX_LORAS": str(len(settings.adapters))}
    return env


def _token_env(settings: DeploySettings) -> dict[str, str]:
    if settings.hf_token is None:
        return {}
    # TGI's launcher and vLLM read HF_TOKEN; the DLC docs and the book use the older name: set both.
    return dict.fromkeys(TOKEN_KEYS, settings.hf_token.get_secret_value())


def build_plan(settings: DeploySettings) -> DeployPlan:
    """Turn settings into the exact requests; no AWS call, so `plan` needs no credentials."""
    profile = settings.profile_spec
    name = settings.endpoint_name
    role = settings.role_arn or _ROLE_PLACEHOLDER
    instance_type = settings.instance_type or profile.instance_type
    gpus_per_copy = settings.num_gpus or profile.gpus_per_copy
    ic_name = f"{name}-ic"
    policy_name = f"{ic_name}-invocations-per-copy"
    # Enough instances for the copies: the endpoint's managed scaling adds instances when autoscaling
    # asks for copies that no longer fit.
    copies_per_instance = max(1, profile.gpus_per_instance // gpus_per_copy)
    instances = settings.instance_count or math.ceil(settings.min_copies / copies_per_instance)
    max_instances = settings.max_instance_count or max(instances, math.ceil(settings.max_copies / copies_per_instance))

    model = {
        "ExecutionRoleArn": role,
        "PrimaryContainer": {
            "Image": settings.image_uri or image_uri_for(settings.region, settings.container),
            "Environment": container_env(settings),
        },
    }
    model_name = f"{name}-model-{_digest(model)}"
    # Inference-component endpoints: no ModelName on the variant (the component brings it), the role on the
    # config, and managed instance scaling so copies can grow past the initial instances.
    variant: Payload = {
        "VariantName": VARIANT_NAME,
        "InstanceType": instance_type,
        "InitialInstanceCount": instances,
        "ManagedInstanceScaling": {
            "Status": "ENABLED",
            "MinInstanceCount": instances,
            "MaxInstanceCount": max_instances,
        },
        # LLM requests last seconds: send each to the copy with the fewest in flight.
        "RoutingConfig": {"RoutingStrategy": "LEAST_OUTSTANDING_REQUESTS"},
    }
    if settings.container == "vllm":  # a CUDA 13 image: the default AMI's driver is too old for it
        variant["InferenceAmiVersion"] = VLLM_AMI_VERSION
    config = {"ExecutionRoleArn": role, "ProductionVariants": [variant]}
    config_name = f"{name}-config-{_digest(config)}"
    target = {"ServiceNamespace": "sagemaker", "ResourceId": f"inference-component/{ic_name}"}
    target["ScalableDimension"] = SCALABLE_DIMENSION
    return DeployPlan(
        region=settings.region,
        endpoint_name=name,
        model_name=model_name,
        endpoint_config_name=config_name,
        inference_component_name=ic_name,
        scaling_policy_name=policy_name,
        instance_type=instance_type,
        max_instances=max_instances,
        prompt_format=settings.prompt_format or profile.prompt_format,
        payload="openai" if settings.container == "vllm" else "tgi",
        create_model={"ModelName": model_name, **model},
        create_endpoint_config={"EndpointConfigName": config_name, **config},
        create_endpoint={"EndpointName": name, "EndpointConfigName": config_name},
        create_inference_component={
            "InferenceComponentName": ic_name,
            "EndpointName": name,
            "VariantName": VARIANT_NAME,
            "Specification": {
                "ModelName": model_name,
                "StartupParameters": {
                    "ContainerStartupHealthCheckTimeoutInSeconds": settings.startup_health_check_timeout_s
                    or profile.startup_timeout_s,
                },
                "ComputeResourceRequirements": {
                    "NumberOfAcceleratorDevicesRequired": gpus_per_copy,
                    "NumberOfCpuCoresRequired": profile.cpus_per_copy,
                    "MinMemoryRequiredInMb": profile.memory_mb_per_copy,
                },
            },
            "RuntimeConfig": {"CopyCount": settings.min_copies},
        },
        register_scalable_target={**target, "MinCapacity": settings.min_copies, "MaxCapacity": settings.max_copies},
        put_scaling_policy={
            "PolicyName": policy_name,
            **target,
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
        # Adapters share the base component's copies and accelerators: no compute, copies nor scaling of their own.
        create_adapters={
            adapter: {
                "InferenceComponentName": f"{ic_name}-{adapter}",
                "EndpointName": name,
                "Specification": {"BaseInferenceComponentName": ic_name, "Container": {"ArtifactUrl": url}},
            }
            for adapter, url in settings.adapters.items()
        },
    )
