"""Create, inspect and delete one deployment with plain boto3 clients (blocking: a CLI tool, not a service).

Each step checks what exists first, so deploy() and teardown() can be re-run after any failure.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError, WaiterError
from botocore.waiter import WaiterModel, create_waiter_with_client

from llm_service.deploy.plan import SCALABLE_DIMENSION, DeployPlan

log = logging.getLogger(__name__)

MAX_WAIT_S = 3600

# botocore ships no inference-component waiters; these follow its EndpointInService/EndpointDeleted.
_IC_WAITERS = WaiterModel(
    {
        "version": 2,
        "waiters": {
            "InferenceComponentInService": {
                "operation": "DescribeInferenceComponent",
                "delay": 30,
                "maxAttempts": 120,
                "acceptors": [
                    {"matcher": "path", "argument": "InferenceComponentStatus", "state": "success",
                     "expected": "InService"},
                    {"matcher": "path", "argument": "InferenceComponentStatus", "state": "failure",
                     "expected": "Failed"},
                    {"matcher": "error", "state": "failure", "expected": "ValidationException"},
                ],
            },
            "InferenceComponentDeleted": {
                "operation": "DescribeInferenceComponent",
                "delay": 30,
                "maxAttempts": 120,
                # No failure on "Failed": a failed component may still say so right after the delete.
                "acceptors": [{"matcher": "error", "state": "success", "expected": "ValidationException"}],
            },
        },
    }
)  # fmt: skip


class DeployError(RuntimeError):
    """A resource reached a state deploy or teardown cannot continue from (the message says why)."""


@dataclass(frozen=True)
class ResourceState:
    """One resource of the deployment and its state; state None means it does not exist."""

    kind: str
    name: str
    state: str | None


def _is_missing(err: ClientError) -> bool:
    # SageMaker answers a missing resource with ValidationException "Could not find ...".
    error = err.response.get("Error", {})
    code, message = error.get("Code", ""), error.get("Message", "").lower()
    return code == "ResourceNotFound" or (code == "ValidationException" and "could not find" in message)


class SageMakerDeployer:
    """Deploys the plan with injected `sagemaker` and `application-autoscaling` boto3 clients."""

    def __init__(self, plan: DeployPlan, sagemaker: Any, autoscaling: Any, *, poll_s: float = 30.0) -> None:
        self.plan = plan
        self._sm = sagemaker
        self._aas = autoscaling
        self._waiter_config = {"Delay": poll_s, "MaxAttempts": max(1, math.ceil(MAX_WAIT_S / poll_s))}

    # -- describe -------------------------------------------------------------------------------------

    def _describe(self, operation: str, **kwargs: Any) -> dict[str, Any] | None:
        try:
            return getattr(self._sm, operation)(**kwargs)
        except ClientError as err:
            if _is_missing(err):
                return None
            raise

    def _model(self) -> dict[str, Any] | None:
        return self._describe("describe_model", ModelName=self.plan.model_name)

    def _endpoint_config(self) -> dict[str, Any] | None:
        return self._describe("describe_endpoint_config", EndpointConfigName=self.plan.endpoint_config_name)

    def _endpoint(self) -> dict[str, Any] | None:
        return self._describe("describe_endpoint", EndpointName=self.plan.endpoint_name)

    def _inference_component(self) -> dict[str, Any] | None:
        return self._describe("describe_inference_component", InferenceComponentName=self.plan.inference_component_name)

    def _scalable_target(self) -> dict[str, Any] | None:
        found = self._aas.describe_scalable_targets(
            ServiceNamespace="sagemaker",
            ResourceIds=[self.plan.resource_id],
            ScalableDimension=SCALABLE_DIMENSION,
        )["ScalableTargets"]
        return found[0] if found else None

    def _scaling_policy(self) -> dict[str, Any] | None:
        found = self._aas.describe_scaling_policies(
            ServiceNamespace="sagemaker",
            ResourceId=self.plan.resource_id,
            ScalableDimension=SCALABLE_DIMENSION,
            PolicyNames=[self.plan.scaling_policy_name],
        )["ScalingPolicies"]
        return found[0] if found else None

    def _wait(self, waiter: Any, what: str, **kwargs: Any) -> None:
        try:
            waiter.wait(**kwargs, WaiterConfig=self._waiter_config)
        except WaiterError as err:
            failure = (err.last_response or {}).get("FailureReason")
            raise DeployError(f"{what}: {failure or err}") from err

    def _ic_waiter(self, name: str) -> Any:
        return create_waiter_with_client(name, _IC_WAITERS, self._sm)

    # -- deploy steps ---------------------------------------------------------------------------------

    def create_model(self) -> bool:
        """Create the SageMaker model (image + TGI env) unless it exists; True when created."""
        if self._model() is not None:
            log.info("model %s exists (models are immutable: teardown to change it)", self.plan.model_name)
            return False
        self._sm.create_model(**self.plan.create_model)
        log.info("created model %s", self.plan.model_name)
        return True

    def create_endpoint_config(self) -> bool:
        """Create the endpoint config (instances, managed scaling, routing) unless it exists."""
        if self._endpoint_config() is not None:
            log.info("endpoint config %s exists", self.plan.endpoint_config_name)
            return False
        self._sm.create_endpoint_config(**self.plan.create_endpoint_config)
        log.info("created endpoint config %s", self.plan.endpoint_config_name)
        return True

    def create_endpoint(self) -> bool:
        """Create the endpoint unless it exists, then wait until it is InService."""
        name = self.plan.endpoint_name
        endpoint = self._endpoint()
        created = endpoint is None
        if endpoint is None:
            self._sm.create_endpoint(**self.plan.create_endpoint)
            log.info("creating endpoint %s (instances start in several minutes)", name)
        elif endpoint["EndpointStatus"] in ("Failed", "Deleting", "OutOfService"):
            raise DeployError(
                f"endpoint {name} is {endpoint['EndpointStatus']} ({endpoint.get('FailureReason', '')}): "
                "run teardown, then deploy again"
            )
        self._wait(self._sm.get_waiter("endpoint_in_service"), f"endpoint {name}", EndpointName=name)
        log.info("endpoint %s is InService", name)
        return created

    def create_inference_component(self) -> bool:
        """Create the inference component (the model's copies on the endpoint) and wait until InService."""
        name = self.plan.inference_component_name
        component = self._inference_component()
        created = component is None
        if component is None:
            self._sm.create_inference_component(**self.plan.create_inference_component)
            log.info("creating inference component %s (downloads and loads the model)", name)
        elif component["InferenceComponentStatus"] in ("Failed", "Deleting"):
            raise DeployError(
                f"inference component {name} is {component['InferenceComponentStatus']} "
                f"({component.get('FailureReason', '')}): run teardown, then deploy again"
            )
        waiter = self._ic_waiter("InferenceComponentInService")
        self._wait(waiter, f"inference component {name}", InferenceComponentName=name)
        log.info("inference component %s is InService", name)
        return created

    def register_autoscaling(self) -> None:
        """Register the copy count as a scalable target and track invocations per copy (both upserts)."""
        self._aas.register_scalable_target(**self.plan.register_scalable_target)
        self._aas.put_scaling_policy(**self.plan.put_scaling_policy)
        target = self.plan.register_scalable_target
        log.info(
            "autoscaling %s: %s..%s copies",
            self.plan.resource_id,
            target["MinCapacity"],
            target["MaxCapacity"],
        )

    def deploy(self) -> None:
        """Run every step in order; a re-run skips what exists and resumes waits."""
        self.create_model()
        self.create_endpoint_config()
        self.create_endpoint()
        self.create_inference_component()
        self.register_autoscaling()

    # -- teardown steps -------------------------------------------------------------------------------

    def delete_autoscaling(self) -> None:
        """Delete the scaling policy and deregister the scalable target, if present."""
        requests = self.plan.teardown_requests()
        if self._scaling_policy() is not None:
            self._aas.delete_scaling_policy(**requests["DeleteScalingPolicy"])
            log.info("deleted scaling policy %s", self.plan.scaling_policy_name)
        if self._scalable_target() is not None:
            self._aas.deregister_scalable_target(**requests["DeregisterScalableTarget"])
            log.info("deregistered scalable target %s", self.plan.resource_id)

    def delete_inference_component(self) -> None:
        """Delete the inference component and wait until it is gone (the endpoint cannot go before it)."""
        name = self.plan.inference_component_name
        component = self._inference_component()
        if component is None:
            return
        if component["InferenceComponentStatus"] != "Deleting":
            self._sm.delete_inference_component(InferenceComponentName=name)
            log.info("deleting inference component %s", name)
        self._wait(self._ic_waiter("InferenceComponentDeleted"), f"deleting {name}", InferenceComponentName=name)

    def delete_endpoint(self) -> None:
        """Delete the endpoint and wait until it is gone, so a new deploy may reuse the name."""
        name = self.plan.endpoint_name
        endpoint = self._endpoint()
        if endpoint is None:
            return
        if endpoint["EndpointStatus"] != "Deleting":
            self._sm.delete_endpoint(EndpointName=name)
            log.info("deleting endpoint %s", name)
        self._wait(self._sm.get_waiter("endpoint_deleted"), f"deleting endpoint {name}", EndpointName=name)

    def delete_endpoint_config(self) -> None:
        """Delete the endpoint config, if present."""
        self._delete("delete_endpoint_config", EndpointConfigName=self.plan.endpoint_config_name)

    def delete_model(self) -> None:
        """Delete the model, if present."""
        self._delete("delete_model", ModelName=self.plan.model_name)

    def _delete(self, operation: str, **kwargs: Any) -> None:
        try:
            getattr(self._sm, operation)(**kwargs)
            log.info("%s %s", operation.replace("_", " "), next(iter(kwargs.values())))
        except ClientError as err:
            if not _is_missing(err):
                raise

    def teardown(self) -> None:
        """Delete everything in reverse order of creation; missing resources are skipped."""
        self.delete_autoscaling()
        self.delete_inference_component()
        self.delete_endpoint()
        self.delete_endpoint_config()
        self.delete_model()

    # -- status ---------------------------------------------------------------------------------------

    def status(self) -> list[ResourceState]:
        """Describe each resource of the plan, in creation order."""
        plan = self.plan
        model, config = self._model(), self._endpoint_config()
        endpoint, component = self._endpoint(), self._inference_component()
        target, policy = self._scalable_target(), self._scaling_policy()
        ic_state = target_state = None
        if target is not None:
            target_state = f"copies {target['MinCapacity']}..{target['MaxCapacity']}"
        if component is not None:
            copies = component.get("RuntimeConfig", {})
            ic_state = (
                f"{component['InferenceComponentStatus']} "
                f"(copies {copies.get('CurrentCopyCount', '?')}/{copies.get('DesiredCopyCount', '?')})"
            )
        return [
            ResourceState("model", plan.model_name, "exists" if model else None),
            ResourceState("endpoint-config", plan.endpoint_config_name, "exists" if config else None),
            ResourceState("endpoint", plan.endpoint_name, endpoint["EndpointStatus"] if endpoint else None),
            ResourceState("inference-component", plan.inference_component_name, ic_state),
            ResourceState("scalable-target", plan.resource_id, target_state),
            ResourceState("scaling-policy", plan.scaling_policy_name, policy["PolicyType"] if policy else None),
        ]
