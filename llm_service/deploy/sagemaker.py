"""Reconcile one deployment with plain boto3 clients: up, status, down (blocking: a CLI tool, not a service).

Each step describes what exists first and sends only what differs from the plan, so `up` is idempotent
(a second run sends no write) and resumes after any interruption, and `down` can be re-run after a
failure. Every write goes through `_send`, which records it in `sent` and turns quota and permission
errors into messages that say what to do.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore import xform_name
from botocore.exceptions import ClientError

from llm_service.deploy.plan import Call, DeployPlan

log = logging.getLogger(__name__)

_PERMISSION_CODES = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "UnrecognizedClientException"}


class DeployError(RuntimeError):
    """A step cannot go on; the message says why and what to do."""


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
    return code in ("ResourceNotFound", "ObjectNotFoundException") or (
        code == "ValidationException" and "could not find" in message
    )


def explain(err: ClientError, plan: DeployPlan) -> DeployError | None:
    """A DeployError saying what to do for quota and permission errors; None for any other error."""
    error = err.response.get("Error", {})
    code, message, operation = error.get("Code", ""), error.get("Message", ""), err.operation_name
    if code == "ResourceLimitExceeded":
        return DeployError(
            f"{operation}: quota exceeded ({message}). Request at least {plan.max_instances} of "
            f"'{plan.instance_type} for endpoint usage' in Service Quotas > Amazon SageMaker in {plan.region}, "
            "or lower LLMTWIN_SM_MAX_COPIES / choose another LLMTWIN_SM_INSTANCE_TYPE; then run up again."
        )
    if code in _PERMISSION_CODES:
        service = (
            "application-autoscaling"
            if operation.endswith(("Target", "Targets", "Policy", "Policies"))
            else "sagemaker"
        )
        return DeployError(
            f"{operation}: permission denied ({message}). The caller needs {service}:{operation}"
            " (and iam:PassRole on LLMTWIN_SM_ROLE_ARN to create); see docs/sagemaker.md#iam."
        )
    return None


def _covers(live: Any, wanted: Any) -> bool:
    """Whether `live` (a describe answer) has every key and value of `wanted` (what we would send)."""
    if isinstance(wanted, dict):
        return isinstance(live, dict) and all(_covers(live.get(k), v) for k, v in wanted.items())
    if isinstance(wanted, float | int) and isinstance(live, float | int):
        return float(live) == float(wanted)
    return bool(live == wanted)


def _elapsed(seconds: float) -> str:
    return f"{int(seconds) // 60}m{int(seconds) % 60:02d}s"


class SageMakerDeployer:
    """Deploys the plan with injected `sagemaker` and `application-autoscaling` boto3 clients."""

    def __init__(
        self,
        plan: DeployPlan,
        sagemaker: Any,
        autoscaling: Any,
        *,
        poll_s: float = 30.0,
        timeout_s: float = 3600.0,
        progress: Callable[[str], None] = log.info,
    ) -> None:
        self.plan = plan
        self._clients = {"sagemaker": sagemaker, "application-autoscaling": autoscaling}
        self._poll_s = poll_s
        self._timeout_s = timeout_s
        self._progress = progress
        self.sent: list[Call] = []  # the writes of this deployer, in order

    # -- AWS calls ------------------------------------------------------------------------------------

    def _invoke(self, service: str, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        try:
            result: dict[str, Any] = getattr(self._clients[service], xform_name(operation))(**params)
        except ClientError as err:
            explained = explain(err, self.plan)
            if explained is not None:
                raise explained from err
            raise
        return result

    def _send(self, call: Call) -> None:
        self._invoke(call.service, call.operation, call.params)
        self.sent.append(call)
        subject = next((v for k, v in call.params.items() if k.endswith("Name")), call.params.get("ResourceId", ""))
        self._progress(f"{call.operation} {subject}")

    def _describe(self, operation: str, **params: Any) -> dict[str, Any] | None:
        try:
            return self._invoke("sagemaker", operation, params)
        except ClientError as err:
            if _is_missing(err):
                return None
            raise

    def _model(self, name: str) -> dict[str, Any] | None:
        return self._describe("DescribeModel", ModelName=name)

    def _endpoint_config(self, name: str) -> dict[str, Any] | None:
        return self._describe("DescribeEndpointConfig", EndpointConfigName=name)

    def _endpoint(self) -> dict[str, Any] | None:
        return self._describe("DescribeEndpoint", EndpointName=self.plan.endpoint_name)

    def _component(self) -> dict[str, Any] | None:
        return self._describe("DescribeInferenceComponent", InferenceComponentName=self.plan.inference_component_name)

    def _adapter(self, name: str) -> dict[str, Any] | None:
        return self._describe("DescribeInferenceComponent", InferenceComponentName=name)

    def _live_adapters(self) -> dict[str, dict[str, Any]]:
        """The adapter components on the base component, live: planned ones and ones settings no longer name."""
        plan, names, token = self.plan, [], None
        if self._endpoint() is None:
            return {}
        while True:
            params: dict[str, Any] = {"EndpointNameEquals": plan.endpoint_name}
            if token:
                params["NextToken"] = token
            page = self._invoke("sagemaker", "ListInferenceComponents", params)
            names += [c["InferenceComponentName"] for c in page.get("InferenceComponents", [])]
            if not (token := page.get("NextToken")):
                break
        found = {}
        for name in names:
            if name == plan.inference_component_name:
                continue
            component = self._adapter(name)
            spec = (component or {}).get("Specification", {})
            if component is not None and spec.get("BaseInferenceComponentName") == plan.inference_component_name:
                found[name] = component
        return found

    def _scalable_target(self) -> dict[str, Any] | None:
        params = {**self.plan.scalable_target, "ResourceIds": [self.plan.resource_id]}
        del params["ResourceId"]
        found = self._invoke("application-autoscaling", "DescribeScalableTargets", params)["ScalableTargets"]
        return found[0] if found else None

    def _scaling_policy(self) -> dict[str, Any] | None:
        params = {**self.plan.scalable_target, "PolicyNames": [self.plan.scaling_policy_name]}
        found = self._invoke("application-autoscaling", "DescribeScalingPolicies", params)["ScalingPolicies"]
        return found[0] if found else None

    def _wait(
        self, what: str, describe: Callable[[], dict[str, Any] | None], key: str, *, gone: bool = False
    ) -> dict[str, Any] | None:
        """Poll until InService (or, with gone, until deleted), reporting the state at every poll."""
        start = time.monotonic()
        while True:
            found = describe()
            state = None if found is None else found[key]
            elapsed = time.monotonic() - start
            if found is None and gone:
                self._progress(f"{what}: deleted after {_elapsed(elapsed)}")
                return None
            if found is None:
                raise DeployError(f"{what} disappeared while waiting for it")
            if state == "InService" and not gone:
                self._progress(f"{what}: InService after {_elapsed(elapsed)}")
                return found
            if state in ("Failed", "OutOfService") and not gone:
                reason = found.get("FailureReason") or "no reason given"
                raise DeployError(f"{what} is {state}: {reason}. Fix the cause, run down, then up again.")
            if elapsed > self._timeout_s:
                raise DeployError(f"{what} is still {state} after {_elapsed(elapsed)}; run the command again to go on")
            self._progress(f"{what}: {state} ({_elapsed(elapsed)})")
            time.sleep(self._poll_s)

    def _wait_endpoint(self, *, gone: bool = False) -> dict[str, Any] | None:
        return self._wait(f"endpoint {self.plan.endpoint_name}", self._endpoint, "EndpointStatus", gone=gone)

    def _wait_component(self, *, gone: bool = False) -> dict[str, Any] | None:
        what = f"inference component {self.plan.inference_component_name}"
        return self._wait(what, self._component, "InferenceComponentStatus", gone=gone)

    def _wait_adapter(self, name: str, *, gone: bool = False) -> dict[str, Any] | None:
        what = f"adapter component {name}"
        return self._wait(what, lambda: self._adapter(name), "InferenceComponentStatus", gone=gone)

    # -- up -------------------------------------------------------------------------------------------

    def up(self) -> list[Call]:
        """Create what is missing and update what differs, in creation order; returns the writes sent."""
        plan, start = self.plan, len(self.sent)
        if self._model(plan.model_name) is None:
            self._send(Call("sagemaker", "CreateModel", plan.create_model))
        if self._endpoint_config(plan.endpoint_config_name) is None:
            self._send(Call("sagemaker", "CreateEndpointConfig", plan.create_endpoint_config))
        old_config = self._up_endpoint()
        old_model = self._up_component()
        self._up_autoscaling()
        self._up_adapters()
        # The superseded model and config are no longer referenced: delete them so `down` leaves nothing.
        if old_config and plan.owns(old_config):
            self._delete("DeleteEndpointConfig", EndpointConfigName=old_config)
        if old_model and plan.owns(old_model):
            self._delete("DeleteModel", ModelName=old_model)
        return self.sent[start:]

    def _up_endpoint(self) -> str | None:
        """Create the endpoint or switch it to the plan's config; returns the config it replaced."""
        plan = self.plan
        endpoint = self._endpoint()
        if endpoint is None:
            self._send(Call("sagemaker", "CreateEndpoint", plan.create_endpoint))
            self._progress("instances start in several minutes")
            self._wait_endpoint()
            return None
        if endpoint["EndpointStatus"] == "Deleting":
            raise DeployError(f"endpoint {plan.endpoint_name} is being deleted: wait for down to finish, then up")
        if endpoint["EndpointStatus"] != "InService":  # a previous run's create or update still going on
            endpoint = self._wait_endpoint()
            assert endpoint is not None
        live_config: str = endpoint["EndpointConfigName"]
        if live_config == plan.endpoint_config_name:
            return None
        update = {"EndpointName": plan.endpoint_name, "EndpointConfigName": plan.endpoint_config_name}
        self._send(Call("sagemaker", "UpdateEndpoint", update))
        self._wait_endpoint()
        return live_config

    def _up_component(self) -> str | None:
        """Create the inference component or update its model, compute or copies; returns a replaced model."""
        plan = self.plan
        component = self._component()
        if component is None:
            self._send(Call("sagemaker", "CreateInferenceComponent", plan.create_inference_component))
            self._progress("each copy downloads and loads the model")
            self._wait_component()
            return None
        if component["InferenceComponentStatus"] == "Deleting":
            raise DeployError(f"{plan.inference_component_name} is being deleted: wait for down to finish, then up")
        if component["InferenceComponentStatus"] != "InService":
            component = self._wait_component()
            assert component is not None
        wanted = plan.create_inference_component
        update: dict[str, Any] = {}
        live_model: str = component["Specification"]["ModelName"]
        if not _covers(component["Specification"], wanted["Specification"]):
            update["Specification"] = wanted["Specification"]
        # Copies belong to autoscaling between min and max; only pull them back into that range.
        low, high = plan.register_scalable_target["MinCapacity"], plan.register_scalable_target["MaxCapacity"]
        copies = component.get("RuntimeConfig", {}).get("DesiredCopyCount", low)
        if not low <= copies <= high:
            update["RuntimeConfig"] = {"CopyCount": min(max(copies, low), high)}
        if not update:
            return None
        self._send(
            Call(
                "sagemaker",
                "UpdateInferenceComponent",
                {"InferenceComponentName": plan.inference_component_name, **update},
            )
        )
        self._wait_component()
        return live_model if live_model != plan.model_name else None

    def _up_autoscaling(self) -> None:
        """Register the copy count as a scalable target and track invocations per copy, where they differ."""
        plan = self.plan
        if not _covers(self._scalable_target(), plan.register_scalable_target):
            self._send(Call("application-autoscaling", "RegisterScalableTarget", plan.register_scalable_target))
        if not _covers(self._scaling_policy(), plan.put_scaling_policy):
            self._send(Call("application-autoscaling", "PutScalingPolicy", plan.put_scaling_policy))

    def _up_adapters(self) -> None:
        """Create the planned adapter components, point changed ones at their new artifact, delete unlisted ones."""
        plan = self.plan
        for params in plan.create_adapters.values():
            name = params["InferenceComponentName"]
            component = self._adapter(name)
            if component is None:
                self._send(Call("sagemaker", "CreateInferenceComponent", params))
                self._wait_adapter(name)
                continue
            if component["InferenceComponentStatus"] == "Deleting":
                raise DeployError(f"{name} is being deleted: wait for down to finish, then up")
            if component["InferenceComponentStatus"] != "InService":
                component = self._wait_adapter(name)
                assert component is not None
            if not _covers(component["Specification"], params["Specification"]):
                update = {"InferenceComponentName": name, "Specification": params["Specification"]}
                self._send(Call("sagemaker", "UpdateInferenceComponent", update))
                self._wait_adapter(name)
        planned = set(plan.adapter_components.values())
        stale = [name for name in self._live_adapters() if name not in planned]
        self._delete_adapters(stale)

    def _delete_adapters(self, names: list[str]) -> None:
        for name in names:
            self._delete("DeleteInferenceComponent", InferenceComponentName=name)
        for name in names:
            self._wait_adapter(name, gone=True)

    # -- down -----------------------------------------------------------------------------------------

    def down(self) -> list[Call]:
        """Delete everything in reverse order of creation; what is missing is skipped. Returns the writes."""
        plan, start = self.plan, len(self.sent)
        # Adapters first (the base cannot go while they sit on it), the live ones: also those settings dropped.
        live = self._live_adapters()
        for name, adapter in live.items():
            if adapter["InferenceComponentStatus"] != "Deleting":
                self._delete("DeleteInferenceComponent", InferenceComponentName=name)
        for name in live:
            self._wait_adapter(name, gone=True)
        delete_policy, deregister, delete_component, delete_endpoint = plan.down_calls()[-6:-2]
        if self._scaling_policy() is not None:
            self._send(delete_policy)
        if self._scalable_target() is not None:
            self._send(deregister)
        # The live names win: after an update, or with other settings than the ones that deployed it.
        models, configs = [plan.model_name], [plan.endpoint_config_name]
        component = self._component()
        if component is not None:
            models.insert(0, component["Specification"]["ModelName"])
            if component["InferenceComponentStatus"] != "Deleting":
                self._send(delete_component)
            self._wait_component(gone=True)  # the endpoint cannot go while it has components
        endpoint = self._endpoint()
        if endpoint is not None:
            configs.insert(0, endpoint["EndpointConfigName"])
            if endpoint["EndpointStatus"] != "Deleting":
                self._send(delete_endpoint)
            self._wait_endpoint(gone=True)  # so a new `up` may reuse the name
        for name in dict.fromkeys(configs):
            if plan.owns(name) and self._endpoint_config(name) is not None:
                self._delete("DeleteEndpointConfig", EndpointConfigName=name)
        for name in dict.fromkeys(models):
            if plan.owns(name) and self._model(name) is not None:
                self._delete("DeleteModel", ModelName=name)
        return self.sent[start:]

    def _delete(self, operation: str, **params: Any) -> None:
        try:
            self._send(Call("sagemaker", operation, params))
        except ClientError as err:
            if not _is_missing(err):  # gone meanwhile: done
                raise

    # -- status ---------------------------------------------------------------------------------------

    def status(self) -> list[ResourceState]:
        """Describe each resource, in creation order; names are the live ones where they exist."""
        plan = self.plan
        endpoint, component = self._endpoint(), self._component()
        target, policy = self._scalable_target(), self._scaling_policy()
        model_name = component["Specification"]["ModelName"] if component else plan.model_name
        config_name = endpoint["EndpointConfigName"] if endpoint else plan.endpoint_config_name

        def stale(live: str, planned: str) -> str:
            return "" if live == planned else " (settings changed: up replaces it)"

        model_state = config_state = component_state = target_state = None
        if self._model(model_name) is not None:
            model_state = "exists" + stale(model_name, plan.model_name)
        if self._endpoint_config(config_name) is not None:
            config_state = "exists" + stale(config_name, plan.endpoint_config_name)
        if component is not None:
            copies = component.get("RuntimeConfig", {})
            component_state = (
                f"{component['InferenceComponentStatus']} "
                f"(copies {copies.get('CurrentCopyCount', '?')}/{copies.get('DesiredCopyCount', '?')})"
            )
        if target is not None:
            target_state = f"copies {target['MinCapacity']}..{target['MaxCapacity']}"
        adapters = [
            ResourceState("adapter-component", name, c["InferenceComponentStatus"])
            for name, c in self._live_adapters().items()
        ]
        adapters += [
            ResourceState("adapter-component", name, None)
            for name in plan.adapter_components.values()
            if name not in {a.name for a in adapters}
        ]
        return [
            ResourceState("model", model_name, model_state),
            ResourceState("endpoint-config", config_name, config_state),
            ResourceState("endpoint", plan.endpoint_name, endpoint["EndpointStatus"] if endpoint else None),
            ResourceState("inference-component", plan.inference_component_name, component_state),
            ResourceState("scalable-target", plan.resource_id, target_state),
            ResourceState("scaling-policy", plan.scaling_policy_name, policy["PolicyType"] if policy else None),
            *adapters,
        ]
