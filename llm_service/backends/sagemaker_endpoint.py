"""What the SageMaker control plane says about an endpoint: whether it serves, and the limits it was deployed with.

Health follows what the endpoint can serve (see SERVING_ENDPOINT_STATUSES), from DescribeEndpoint answers
that are shared by concurrent checks and reused for a TTL (EndpointStatusCache). The token limits are the
ones the container was deployed with (TGI's MAX_INPUT_TOKENS / MAX_TOTAL_TOKENS, the vLLM DLC's
SM_VLLM_MAX_MODEL_LEN or LMI's OPTION_MAX_MODEL_LEN, read through DescribeEndpoint → DescribeEndpointConfig
→ DescribeModel, or DescribeInferenceComponent → DescribeModel: deployed_limits).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from llm_service.backends.sagemaker_errors import map_error
from llm_service.errors import Overloaded, ServiceError

log = logging.getLogger(__name__)

# Endpoint statuses in which invocations are answered. While Updating (UpdateEndpoint's blue/green switch,
# which `llm_service.deploy up` sends), SystemUpdating (patching) and RollingBack the old fleet keeps
# serving; UpdateRollbackFailed leaves it in service with a mix of both configs. Creating, OutOfService,
# Deleting and Failed do not serve.
SERVING_ENDPOINT_STATUSES = frozenset(
    {"InService", "Updating", "SystemUpdating", "RollingBack", "UpdateRollbackFailed"}
)
# An inference component keeps its current copies serving while UpdateInferenceComponent rolls out new ones.
SERVING_COMPONENT_STATUSES = frozenset({"InService", "Updating"})
# vLLM's --max-model-len as the HF vLLM DLC (SM_VLLM_*) and AWS's LMI (OPTION_*) take it.
VLLM_MAX_MODEL_LEN = ("SM_VLLM_MAX_MODEL_LEN", "OPTION_MAX_MODEL_LEN")


@dataclass(frozen=True, slots=True)
class EndpointStatus:
    """What DescribeEndpoint (and DescribeInferenceComponent) said."""

    endpoint: str
    component: str | None = None

    @property
    def serving(self) -> bool:
        """True when the endpoint (and its component) answers invocations in this state."""
        return self.endpoint in SERVING_ENDPOINT_STATUSES and (
            self.component is None or self.component in SERVING_COMPONENT_STATUSES
        )

    def __str__(self) -> str:
        return self.endpoint if self.component is None else f"{self.endpoint}, its component {self.component}"


class EndpointStatusCache:
    """The endpoint's (and component's) status: reused for `ttl_s`, one DescribeEndpoint at a time.

    Throttling keeps the last answer: every replica polls the same account-wide API, and taking the
    tier out of service because the control plane is busy would turn a throttle into an outage.
    """

    def __init__(self, endpoint: str, component: str | None, ttl_s: float) -> None:
        self._endpoint = endpoint
        self._component = component
        self._ttl_s = ttl_s
        self._status: EndpointStatus | None = None
        self._error: ServiceError | None = None
        self._at = -math.inf  # time.monotonic() of the last answer (or error)
        self._call: asyncio.Task[EndpointStatus] | None = None

    async def get(self, control: Any) -> EndpointStatus:
        """The status, asking `control` (a boto3 "sagemaker" client) when the last answer is older than the TTL."""
        if time.monotonic() - self._at < self._ttl_s:
            if self._error is not None:
                raise self._error
            if self._status is not None:
                return self._status
        if self._call is None:
            self._call = asyncio.create_task(self._refresh(control))
            self._call.add_done_callback(_retrieve)
        # Shielded: a caller's timeout or cancel must not cancel the call the others wait on.
        return await asyncio.shield(self._call)

    async def _refresh(self, control: Any) -> EndpointStatus:
        def describe() -> EndpointStatus:
            endpoint = str(control.describe_endpoint(EndpointName=self._endpoint)["EndpointStatus"])
            if not self._component:
                return EndpointStatus(endpoint)
            component = control.describe_inference_component(InferenceComponentName=self._component)
            return EndpointStatus(endpoint, str(component["InferenceComponentStatus"]))

        try:
            status = await asyncio.to_thread(describe)
            self._status, self._error = status, None
            return status
        except Exception as exc:
            error = map_error(exc, self._endpoint)
            if isinstance(error, Overloaded) and self._status is not None:
                log.warning("DescribeEndpoint throttled, keeping the last status %s: %s", self._status, error)
                return self._status
            self._error = error
            raise error from exc
        finally:
            self._at = time.monotonic()
            self._call = None


def deployed_limits(control: Any, endpoint: str, component: str | None) -> tuple[str, tuple[int | None, int | None]]:
    """(where from, (max input, max total)) as the container was deployed; the smallest over variants.

    vLLM has a single limit, the max model length (prompt and generated tokens): its prompt limit is that
    length less the one token a generation needs. Blocking (boto3): call it on a thread.
    """
    envs: list[dict[str, str]] = []
    if component:
        spec = control.describe_inference_component(InferenceComponentName=component)["Specification"]
        models = [spec["ModelName"]] if spec.get("ModelName") else []
        inline = (spec.get("Container") or {}).get("Environment") or {}
    else:
        config = control.describe_endpoint(EndpointName=endpoint)["EndpointConfigName"]
        variants = control.describe_endpoint_config(EndpointConfigName=config)["ProductionVariants"]
        models = [v["ModelName"] for v in variants if v.get("ModelName")]
        inline = {}
    for name in models:
        model = control.describe_model(ModelName=name)
        env: dict[str, str] = {}
        for container in [model.get("PrimaryContainer") or {}, *(model.get("Containers") or [])]:
            env |= container.get("Environment") or {}
        envs.append(env | inline)
    if not models and inline:
        envs.append(inline)
    inputs, totals = [], []
    for env in envs:
        if (total := _env_int(env, "MAX_TOTAL_TOKENS")) is not None:  # TGI
            totals.append(total)
            if (max_input := _env_int(env, "MAX_INPUT_TOKENS", "MAX_INPUT_LENGTH")) is not None:
                inputs.append(max_input)
        elif (length := _env_int(env, *VLLM_MAX_MODEL_LEN)) is not None:
            totals.append(length)
            inputs.append(length - 1)
        elif (max_input := _env_int(env, "MAX_INPUT_TOKENS", "MAX_INPUT_LENGTH")) is not None:
            inputs.append(max_input)
    source = f"deployed model {', '.join(models)}" if models else "deployed component"
    return source, (min(inputs, default=None), min(totals, default=None))


def _env_int(env: dict[str, str], *names: str) -> int | None:
    """The first of `names` set in a container environment, as a positive int."""
    for name in names:
        try:
            value = int(env[name])
        except (KeyError, ValueError):
            continue
        if value > 0:
            return value
    return None


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Marks a shared task's exception as seen (every waiter may have been cancelled)."""
    if not task.cancelled():
        task.exception()
