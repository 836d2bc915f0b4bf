"""SageMaker deployment tooling: profiles, `plan` payloads, and up/status/down over the AWS wire.

moto covers the model step and the tolerant deletes. It lacks the rest (inference components, the
`sagemaker:inference-component:DesiredCopyCount` dimension, g5/p4d instance types, model-less variants), so
the full flow runs against `ControlPlane`: a loopback server speaking the AWS JSON 1.1 protocol for the
SageMaker and Application Auto Scaling calls the deployer makes, with AWS's error codes and state changes.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from moto import mock_aws
from pydantic import SecretStr

from llm_service.deploy import DeployError, DeploySettings, SageMakerDeployer, build_plan, image_uri_for
from llm_service.deploy.__main__ import main

ROLE = "arn:aws:iam::123456789012:role/llmtwin-sagemaker"
REGION = "eu-central-1"
DIMENSION = "sagemaker:inference-component:DesiredCopyCount"


class AwsError(Exception):
    """An AWS error answer: HTTP 400 with `__type` and `message`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _not_found(kind: str, name: str) -> AwsError:
    return AwsError("ValidationException", f'Could not find {kind} "arn:aws:sagemaker:{REGION}:1:{kind}/{name}".')


class ControlPlane:
    """SageMaker + Application Auto Scaling state; transitional states last one describe each."""

    def __init__(self) -> None:
        self.models: dict[str, dict[str, Any]] = {}
        self.configs: dict[str, dict[str, Any]] = {}
        self.endpoints: dict[str, dict[str, Any]] = {}
        self.components: dict[str, dict[str, Any]] = {}
        self.targets: dict[str, dict[str, Any]] = {}
        self.policies: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []
        self.requests: list[tuple[str, dict[str, Any]]] = []  # every call with the body boto3 sent
        self.endpoint_failure: str | None = None
        self.errors: dict[str, AwsError] = {}  # operation -> the error it answers
        self.lock = threading.Lock()

    def handle(self, op: str, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.calls.append(op)
            self.requests.append((op, body))
            if op in self.errors:
                raise self.errors[op]
            return getattr(self, op)(body)

    def writes(self) -> list[tuple[str, dict[str, Any]]]:
        """The calls that change something, in order."""
        return [(op, body) for op, body in self.requests if not op.startswith(("Describe", "List"))]

    @staticmethod
    def _advance(store: dict[str, dict[str, Any]], name: str, key: str, failure: str | None = None) -> None:
        # Called after a describe answered: Creating/Updating → InService (or Failed), Deleting → gone.
        state = store[name][key]
        if state in ("Creating", "Updating"):
            store[name][key] = "Failed" if failure else "InService"
            store[name]["FailureReason"] = failure
        elif state == "Deleting":
            del store[name]

    # SageMaker
    def CreateModel(self, body: dict[str, Any]) -> dict[str, Any]:
        if body["ModelName"] in self.models:
            raise AwsError("ValidationException", "Cannot create already existing model.")
        self.models[body["ModelName"]] = body
        return {"ModelArn": f"arn:model/{body['ModelName']}"}

    def DescribeModel(self, body: dict[str, Any]) -> dict[str, Any]:
        if body["ModelName"] not in self.models:
            raise _not_found("model", body["ModelName"])
        return self.models[body["ModelName"]]

    def DeleteModel(self, body: dict[str, Any]) -> dict[str, Any]:
        self.DescribeModel(body)
        del self.models[body["ModelName"]]
        return {}

    def CreateEndpointConfig(self, body: dict[str, Any]) -> dict[str, Any]:
        if body["EndpointConfigName"] in self.configs:
            raise AwsError("ValidationException", "Cannot create already existing endpoint configuration.")
        self.configs[body["EndpointConfigName"]] = body
        return {"EndpointConfigArn": f"arn:endpoint-config/{body['EndpointConfigName']}"}

    def DescribeEndpointConfig(self, body: dict[str, Any]) -> dict[str, Any]:
        if body["EndpointConfigName"] not in self.configs:
            raise _not_found("endpoint-config", body["EndpointConfigName"])
        return self.configs[body["EndpointConfigName"]]

    def DeleteEndpointConfig(self, body: dict[str, Any]) -> dict[str, Any]:
        self.DescribeEndpointConfig(body)
        del self.configs[body["EndpointConfigName"]]
        return {}

    def CreateEndpoint(self, body: dict[str, Any]) -> dict[str, Any]:
        self.DescribeEndpointConfig(body)
        self.endpoints[body["EndpointName"]] = {**body, "EndpointStatus": "Creating"}
        return {"EndpointArn": f"arn:endpoint/{body['EndpointName']}"}

    def DescribeEndpoint(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body["EndpointName"]
        if name not in self.endpoints:
            raise _not_found("endpoint", name)
        answer = {k: v for k, v in self.endpoints[name].items() if v is not None}
        self._advance(self.endpoints, name, "EndpointStatus", self.endpoint_failure)
        return answer

    def UpdateEndpoint(self, body: dict[str, Any]) -> dict[str, Any]:
        self.DescribeEndpointConfig(body)
        self.endpoints[body["EndpointName"]] |= {"EndpointConfigName": body["EndpointConfigName"]}
        self.endpoints[body["EndpointName"]]["EndpointStatus"] = "Updating"
        return {"EndpointArn": f"arn:endpoint/{body['EndpointName']}"}

    def DeleteEndpoint(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body["EndpointName"]
        if name not in self.endpoints:
            raise _not_found("endpoint", name)
        if any(c["EndpointName"] == name for c in self.components.values()):
            raise AwsError("ValidationException", "Cannot delete an endpoint that has inference components.")
        self.endpoints[name]["EndpointStatus"] = "Deleting"
        return {}

    def CreateInferenceComponent(self, body: dict[str, Any]) -> dict[str, Any]:
        endpoint = self.endpoints.get(body["EndpointName"], {})
        if endpoint.get("EndpointStatus") != "InService":
            raise AwsError("ValidationException", "Endpoint is not InService.")
        spec = body["Specification"]
        if "BaseInferenceComponentName" in spec:  # an adapter: no model, compute or copies of its own
            base = self.components.get(spec["BaseInferenceComponentName"], {})
            if base.get("InferenceComponentStatus") != "InService" or "ModelName" in spec or "RuntimeConfig" in body:
                raise AwsError("ValidationException", "Adapter components need an InService base and no model.")
            self.components[body["InferenceComponentName"]] = {**body, "InferenceComponentStatus": "Creating"}
            return {"InferenceComponentArn": f"arn:inference-component/{body['InferenceComponentName']}"}
        if spec["ModelName"] not in self.models:
            raise _not_found("model", spec["ModelName"])
        copies = body["RuntimeConfig"]["CopyCount"]
        runtime = {"DesiredCopyCount": copies, "CurrentCopyCount": copies}
        self.components[body["InferenceComponentName"]] = {
            **body,
            "RuntimeConfig": runtime,
            "InferenceComponentStatus": "Creating",
        }
        return {"InferenceComponentArn": f"arn:inference-component/{body['InferenceComponentName']}"}

    def DescribeInferenceComponent(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body["InferenceComponentName"]
        if name not in self.components:
            raise _not_found("inference-component", name)
        answer = dict(self.components[name])
        self._advance(self.components, name, "InferenceComponentStatus")
        return answer

    def ListInferenceComponents(self, body: dict[str, Any]) -> dict[str, Any]:
        # One component a page: the deployer must follow NextToken.
        names = [n for n, c in self.components.items() if c["EndpointName"] == body.get("EndpointNameEquals")]
        start = int(body.get("NextToken", "0"))
        page = [
            {"InferenceComponentName": n, "InferenceComponentStatus": self.components[n]["InferenceComponentStatus"]}
            for n in names[start : start + 1]
        ]
        return {"InferenceComponents": page, **({"NextToken": str(start + 1)} if start + 1 < len(names) else {})}

    def UpdateInferenceComponent(self, body: dict[str, Any]) -> dict[str, Any]:
        component = self.components[body["InferenceComponentName"]]
        if "BaseInferenceComponentName" in component["Specification"]:
            component["Specification"] = body["Specification"]
        elif "Specification" in body:
            if body["Specification"]["ModelName"] not in self.models:
                raise _not_found("model", body["Specification"]["ModelName"])
            component["Specification"] = body["Specification"]
        if "RuntimeConfig" in body:
            copies = body["RuntimeConfig"]["CopyCount"]
            component["RuntimeConfig"] = {"DesiredCopyCount": copies, "CurrentCopyCount": copies}
        component["InferenceComponentStatus"] = "Updating"
        return {"InferenceComponentArn": f"arn:inference-component/{body['InferenceComponentName']}"}

    def DeleteInferenceComponent(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body["InferenceComponentName"]
        if any(c["Specification"].get("BaseInferenceComponentName") == name for c in self.components.values()):
            raise AwsError("ValidationException", f"Inference component {name} has adapter components.")
        self.components[body["InferenceComponentName"]]["InferenceComponentStatus"] = "Deleting"
        return {}

    # Application Auto Scaling
    def RegisterScalableTarget(self, body: dict[str, Any]) -> dict[str, Any]:
        component = body["ResourceId"].removeprefix("inference-component/")
        if body["ScalableDimension"] != DIMENSION or component not in self.components:
            raise AwsError("ValidationException", "Unsupported resource or dimension.")
        self.targets[body["ResourceId"]] = body
        return {"ScalableTargetARN": "arn:scalable-target/1"}

    def DescribeScalableTargets(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"ScalableTargets": [t for r, t in self.targets.items() if r in body.get("ResourceIds", [r])]}

    def DeregisterScalableTarget(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.targets.pop(body["ResourceId"], None) is None:
            raise AwsError("ObjectNotFoundException", "No scalable target found.")
        self.policies = {n: p for n, p in self.policies.items() if p["ResourceId"] != body["ResourceId"]}
        return {}

    def PutScalingPolicy(self, body: dict[str, Any]) -> dict[str, Any]:
        if body["ResourceId"] not in self.targets:
            raise AwsError("ObjectNotFoundException", "No scalable target registered.")
        self.policies[body["PolicyName"]] = body
        return {"PolicyARN": f"arn:policy/{body['PolicyName']}", "Alarms": []}

    def DescribeScalingPolicies(self, body: dict[str, Any]) -> dict[str, Any]:
        names = body.get("PolicyNames", list(self.policies))
        return {"ScalingPolicies": [p for n, p in self.policies.items() if n in names]}

    def DeleteScalingPolicy(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.policies.pop(body["PolicyName"], None) is None:
            raise AwsError("ObjectNotFoundException", "No scaling policy found.")
        return {}


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
        operation = self.headers["X-Amz-Target"].split(".", 1)[1]  # "SageMaker.CreateModel"
        try:
            status, answer = 200, self.server.plane.handle(operation, body)
        except AwsError as err:
            status, answer = 400, {"__type": err.code, "message": err.message}
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    plane: ControlPlane


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """No real AWS configuration or LLMTWIN_SM_* values leak in from the machine."""
    for key in list(os.environ):
        if key.startswith(("LLMTWIN_SM_", "AWS_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def plane() -> Iterator[tuple[ControlPlane, str]]:
    """A running loopback control plane and its URL."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.plane = ControlPlane()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server.plane, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def _deployer(url: str | None, progress: list[str] | None = None, **settings: Any) -> tuple[SageMakerDeployer, Any]:
    """A deployer on clients for `url` (None: moto), and its SageMaker client for checks."""
    session = boto3.session.Session(region_name=REGION)
    sagemaker = session.client("sagemaker", endpoint_url=url)
    plan = build_plan(DeploySettings(role_arn=ROLE, region=REGION, **settings))
    deployer = SageMakerDeployer(
        plan,
        sagemaker,
        session.client("application-autoscaling", endpoint_url=url),
        poll_s=0.01,
        progress=(progress if progress is not None else []).append,
    )
    return deployer, sagemaker


def _ops(writes: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [op for op, _ in writes]


def test_a10g_8b_profile_is_the_books_quantized_deployment() -> None:
    plan = build_plan(DeploySettings(role_arn=ROLE))
    env = plan.create_model["PrimaryContainer"]["Environment"]
    assert env == {
        "HF_MODEL_ID": "mlabonne/TwinLlama-3.1-8B-DPO",
        "SM_NUM_GPUS": "1",
        "MAX_INPUT_TOKENS": "2048",
        "MAX_TOTAL_TOKENS": "4096",
        "MAX_BATCH_TOTAL_TOKENS": "16384",
        "HF_MODEL_QUANTIZE": "bitsandbytes",
    }
    assert plan.create_model["PrimaryContainer"]["Image"] == (
        "763104351884.dkr.ecr.eu-central-1.amazonaws.com/huggingface-pytorch-tgi-inference:"
        "2.7.0-tgi3.3.6-gpu-py311-cu124-ubuntu22.04"
    )
    assert plan.model_name.startswith("llmtwin-model-") and plan.endpoint_config_name.startswith("llmtwin-config-")
    [variant] = plan.create_endpoint_config["ProductionVariants"]
    assert "ModelName" not in variant  # inference-component endpoints take the model from the component
    assert variant["VariantName"] == "AllTraffic"
    assert variant["InstanceType"] == "ml.g5.2xlarge"
    assert variant["ManagedInstanceScaling"] == {"Status": "ENABLED", "MinInstanceCount": 1, "MaxInstanceCount": 2}
    assert variant["RoutingConfig"] == {"RoutingStrategy": "LEAST_OUTSTANDING_REQUESTS"}
    spec = plan.create_inference_component["Specification"]
    assert spec["ModelName"] == plan.model_name
    assert spec["ComputeResourceRequirements"] == {
        "NumberOfAcceleratorDevicesRequired": 1,
        "NumberOfCpuCoresRequired": 4,
        "MinMemoryRequiredInMb": 8192,
    }
    assert plan.service_env()["LLM_SAGEMAKER_INFERENCE_COMPONENT"] == "llmtwin-ic"


@pytest.mark.parametrize(
    ("overrides", "prompt_format"),
    [
        ({}, "alpaca"),
        ({"profile": "a100-30b"}, "chat"),
        ({"model_id": "me/my-chat-twin", "prompt_format": "chat"}, "chat"),
    ],
)
def test_the_plan_tells_the_rag_service_the_models_prompt_format(overrides: dict[str, str], prompt_format: str) -> None:
    assert build_plan(DeploySettings(role_arn=ROLE, **overrides)).rag_env() == {"RAG_PROMPT_FORMAT": prompt_format}


def test_a100_30b_profile_shards_the_model_unquantized_over_eight_a100s() -> None:
    plan = build_plan(DeploySettings(role_arn=ROLE, profile="a100-30b", max_copies=3))
    env = plan.create_model["PrimaryContainer"]["Environment"]
    assert env["SM_NUM_GPUS"] == "8"
    assert "HF_MODEL_QUANTIZE" not in env
    [variant] = plan.create_endpoint_config["ProductionVariants"]
    assert variant["InstanceType"] == "ml.p4d.24xlarge"
    # One 8-GPU copy per instance: three copies need three instances.
    assert variant["ManagedInstanceScaling"]["MaxInstanceCount"] == 3
    spec = plan.create_inference_component["Specification"]
    assert spec["ComputeResourceRequirements"]["NumberOfAcceleratorDevicesRequired"] == 8


def test_image_is_pinned_per_region() -> None:
    assert image_uri_for("af-south-1").startswith("626614931356.dkr.ecr.af-south-1.amazonaws.com/")
    assert image_uri_for("us-east-1").startswith("763104351884.dkr.ecr.us-east-1.amazonaws.com/")
    assert image_uri_for("ap-northeast-3").startswith("364406365360.dkr.ecr.ap-northeast-3.amazonaws.com/")
    with pytest.raises(ValueError, match="LLMTWIN_SM_IMAGE_URI"):
        build_plan(DeploySettings(region="xx-nowhere-1"))
    assert build_plan(DeploySettings(region="xx-nowhere-1", image_uri="1.dkr.ecr.x/tgi:1")).create_model


def test_settings_and_overrides_come_from_llmtwin_sm_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMTWIN_SM_PRESET", "30b-a100")  # the old variable and profile name still work
    monkeypatch.setenv("LLMTWIN_SM_MODEL_ID", "me/twin-30b")
    monkeypatch.setenv("LLMTWIN_SM_MODEL_REVISION", "0123abcd")
    monkeypatch.setenv("LLMTWIN_SM_QUANTIZE", "eetq")
    monkeypatch.setenv("LLMTWIN_SM_MAX_INPUT_TOKENS", "8000")
    monkeypatch.setenv("LLMTWIN_SM_MAX_TOTAL_TOKENS", "9000")
    monkeypatch.setenv("LLMTWIN_SM_NUM_GPUS", "4")
    monkeypatch.setenv("LLMTWIN_SM_CONTAINER_ENV", '{"MESSAGES_API_ENABLED": "true"}')
    monkeypatch.setenv("LLMTWIN_SM_IMAGE_URI", "1.dkr.ecr.x/tgi:custom")
    monkeypatch.setenv("LLMTWIN_SM_INSTANCE_TYPE", "ml.p4de.24xlarge")
    monkeypatch.setenv("LLMTWIN_SM_TARGET_INVOCATIONS_PER_COPY", "4")
    settings = DeploySettings()
    assert settings.profile == "a100-30b"
    plan = build_plan(settings)
    container = plan.create_model["PrimaryContainer"]
    assert container["Image"] == "1.dkr.ecr.x/tgi:custom"
    assert container["Environment"] == {
        "HF_MODEL_ID": "me/twin-30b",
        "HF_MODEL_REVISION": "0123abcd",
        "SM_NUM_GPUS": "4",
        "MAX_INPUT_TOKENS": "8000",
        "MAX_TOTAL_TOKENS": "9000",
        "MAX_BATCH_TOTAL_TOKENS": "65536",
        "HF_MODEL_QUANTIZE": "eetq",
        "MESSAGES_API_ENABLED": "true",
    }
    # Two 4-GPU copies fit on one 8-GPU instance.
    assert plan.create_endpoint_config["ProductionVariants"][0]["ManagedInstanceScaling"]["MaxInstanceCount"] == 1
    assert plan.create_endpoint_config["ProductionVariants"][0]["InstanceType"] == "ml.p4de.24xlarge"
    assert plan.put_scaling_policy["TargetTrackingScalingPolicyConfiguration"]["TargetValue"] == 4.0
    monkeypatch.setenv("LLMTWIN_SM_PROFILE", "a10g-8b")
    assert DeploySettings().profile == "a10g-8b"

    with pytest.raises(ValueError, match="max_copies"):
        DeploySettings(min_copies=3, max_copies=2)
    with pytest.raises(ValueError, match="max_total_tokens"):
        DeploySettings(max_input_tokens=4096, max_total_tokens=4096)
    with pytest.raises(ValueError, match="role_arn"):
        DeploySettings(role_arn="llmtwin-role")


def test_names_change_exactly_when_the_content_does() -> None:
    base = build_plan(DeploySettings(role_arn=ROLE))
    assert build_plan(DeploySettings(role_arn=ROLE)) == base
    longer = build_plan(DeploySettings(role_arn=ROLE, max_total_tokens=8192))
    assert longer.model_name != base.model_name and longer.endpoint_config_name == base.endpoint_config_name
    bigger = build_plan(DeploySettings(role_arn=ROLE, instance_type="ml.g5.4xlarge"))
    assert bigger.endpoint_config_name != base.endpoint_config_name and bigger.model_name == base.model_name
    # The token never feeds a name (names are visible to anyone who may list models).
    assert build_plan(DeploySettings(role_arn=ROLE, hf_token=SecretStr("a"))).model_name == (
        build_plan(DeploySettings(role_arn=ROLE, hf_token=SecretStr("b"))).model_name
    )


def test_plan_prints_the_calls_with_the_token_masked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LLMTWIN_SM_HF_TOKEN", "hf_secret_value")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")  # plan needs no AWS at all

    assert main(["plan"]) == 0

    out = capsys.readouterr().out
    calls, end = json.JSONDecoder().raw_decode(out)
    assert [(c["service"], c["operation"]) for c in calls] == [
        ("sagemaker", "CreateModel"),
        ("sagemaker", "CreateEndpointConfig"),
        ("sagemaker", "CreateEndpoint"),
        ("sagemaker", "CreateInferenceComponent"),
        ("application-autoscaling", "RegisterScalableTarget"),
        ("application-autoscaling", "PutScalingPolicy"),
    ]
    env = calls[0]["params"]["PrimaryContainer"]["Environment"]
    assert env["HF_MODEL_QUANTIZE"] == "bitsandbytes"
    assert (env["MAX_INPUT_TOKENS"], env["MAX_TOTAL_TOKENS"]) == ("2048", "4096")
    assert env["HUGGING_FACE_HUB_TOKEN"] == env["HF_TOKEN"] == "***"
    assert "hf_secret_value" not in out
    policy = calls[5]["params"]["TargetTrackingScalingPolicyConfiguration"]
    assert policy["PredefinedMetricSpecification"]["PredefinedMetricType"] == (
        "SageMakerInferenceComponentInvocationsPerCopy"
    )
    hint = out[end:].strip().splitlines()
    assert hint[1] == (
        "LLM_BACKEND=sagemaker LLM_SAGEMAKER_ENDPOINT_NAME=llmtwin "
        "LLM_SAGEMAKER_INFERENCE_COMPONENT=llmtwin-ic LLM_SAGEMAKER_REGION=eu-central-1 LLM_SAGEMAKER_PAYLOAD=tgi"
    )
    assert hint[-1] == "RAG_PROMPT_FORMAT=alpaca"  # TwinLlama's training format, for every RAG prompt
    assert main(["deploy", "--dry-run"]) == 0  # the old verb: same output
    assert capsys.readouterr().out == out

    assert main(["down", "--dry-run", "--profile", "a100-30b"]) == 0
    assert [c["operation"] for c in json.loads(capsys.readouterr().out)] == [
        "DeleteScalingPolicy",
        "DeregisterScalableTarget",
        "DeleteInferenceComponent",
        "DeleteEndpoint",
        "DeleteEndpointConfig",
        "DeleteModel",
    ]


def test_create_model_request_is_accepted_by_moto() -> None:
    with mock_aws():
        session = boto3.session.Session(region_name=REGION)
        sagemaker = session.client("sagemaker")
        plan = build_plan(DeploySettings(role_arn=ROLE, region=REGION, hf_token=SecretStr("hf_x")))
        # moto lacks the rest of up (see the module docstring); the model is where the TGI env lives.
        sagemaker.create_model(**plan.create_model)
        model = sagemaker.describe_model(ModelName=plan.model_name)
        assert model["PrimaryContainer"] == plan.create_model["PrimaryContainer"]
        assert model["ExecutionRoleArn"] == ROLE
        sagemaker.delete_model(ModelName=plan.model_name)
        assert sagemaker.list_models()["Models"] == []


def test_up_sends_the_plan_in_order_waits_with_progress_and_a_rerun_changes_nothing(
    plane: tuple[ControlPlane, str],
) -> None:
    state, url = plane
    progress: list[str] = []
    deployer, _ = _deployer(url, progress, max_copies=3, hf_token=SecretStr("hf_x"))

    sent = deployer.up()

    # Exactly the planned requests, as the server received them through botocore's serializer.
    assert state.writes() == [(c.operation, c.params) for c in deployer.plan.up_calls()]
    assert sent == deployer.plan.up_calls()
    assert state.endpoints["llmtwin"]["EndpointStatus"] == "InService"
    assert "endpoint llmtwin: Creating (0m00s)" in progress
    assert any(p.startswith("inference component llmtwin-ic: InService after") for p in progress)
    assert {(r.kind, r.state) for r in deployer.status()} == {
        ("model", "exists"),
        ("endpoint-config", "exists"),
        ("endpoint", "InService"),
        ("inference-component", "InService (copies 1/1)"),
        ("scalable-target", "copies 1..3"),
        ("scaling-policy", "TargetTrackingScaling"),
    }

    state.requests.clear()
    assert deployer.up() == []
    assert state.writes() == []
    assert _deployer(url, max_copies=3, hf_token=SecretStr("hf_x"))[0].up() == []  # a fresh process: same answer


def test_a_changed_setting_updates_only_what_must_change(plane: tuple[ControlPlane, str]) -> None:
    state, url = plane
    first, _ = _deployer(url)
    first.up()
    old = first.plan

    # The scaling target: only the policy changes.
    state.requests.clear()
    _deployer(url, target_invocations_per_copy=3)[0].up()
    assert _ops(state.writes()) == ["PutScalingPolicy"]
    assert state.policies[old.scaling_policy_name]["TargetTrackingScalingPolicyConfiguration"]["TargetValue"] == 3

    # A container limit: a new model, the component switched to it, the old model deleted.
    state.requests.clear()
    longer, _ = _deployer(url, target_invocations_per_copy=3, max_total_tokens=8192)
    longer.up()
    new_model = longer.plan.model_name
    assert state.writes() == [
        ("CreateModel", longer.plan.create_model),
        (
            "UpdateInferenceComponent",
            {
                "InferenceComponentName": "llmtwin-ic",
                "Specification": longer.plan.create_inference_component["Specification"],
            },
        ),
        ("DeleteModel", {"ModelName": old.model_name}),
    ]
    assert list(state.models) == [new_model]
    assert state.components["llmtwin-ic"]["Specification"]["ModelName"] == new_model

    # More copies: a new endpoint config (instances) + UpdateEndpoint, copies raised, autoscaling range.
    state.requests.clear()
    more, _ = _deployer(url, target_invocations_per_copy=3, max_total_tokens=8192, min_copies=2, max_copies=4)
    more.up()
    assert state.writes() == [
        ("CreateEndpointConfig", more.plan.create_endpoint_config),
        ("UpdateEndpoint", {"EndpointName": "llmtwin", "EndpointConfigName": more.plan.endpoint_config_name}),
        ("UpdateInferenceComponent", {"InferenceComponentName": "llmtwin-ic", "RuntimeConfig": {"CopyCount": 2}}),
        ("RegisterScalableTarget", more.plan.register_scalable_target),
        ("DeleteEndpointConfig", {"EndpointConfigName": old.endpoint_config_name}),
    ]
    assert list(state.configs) == [more.plan.endpoint_config_name]
    assert state.endpoints["llmtwin"]["EndpointConfigName"] == more.plan.endpoint_config_name
    assert state.components["llmtwin-ic"]["RuntimeConfig"]["DesiredCopyCount"] == 2

    state.requests.clear()
    assert more.up() == []


def test_down_deletes_the_live_resources_in_reverse_order_and_a_second_run_is_a_no_op(
    plane: tuple[ControlPlane, str],
) -> None:
    state, url = plane
    _deployer(url, max_total_tokens=8192, instance_type="ml.g5.4xlarge")[0].up()
    state.requests.clear()
    # Run with the default settings: the live model and config names differ from its plan, and still go.
    deployer, _ = _deployer(url)

    deployer.down()

    assert _ops(state.writes()) == [
        "DeleteScalingPolicy",
        "DeregisterScalableTarget",
        "DeleteInferenceComponent",
        "DeleteEndpoint",
        "DeleteEndpointConfig",
        "DeleteModel",
    ]
    assert not (state.models or state.configs or state.endpoints or state.components or state.targets)

    state.requests.clear()
    assert deployer.down() == []
    assert state.writes() == []
    assert all(r.state is None for r in deployer.status())


def test_a_failed_endpoint_stops_up_with_the_reason(plane: tuple[ControlPlane, str]) -> None:
    state, url = plane
    state.endpoint_failure = "Insufficient capacity for ml.g5.2xlarge"

    with pytest.raises(DeployError, match=r"Insufficient capacity.*run down, then up"):
        _deployer(url)[0].up()
    assert "CreateInferenceComponent" not in state.calls


@pytest.mark.parametrize(
    ("operation", "code", "expected"),
    [
        (
            "CreateEndpoint",
            "ResourceLimitExceeded",
            r"quota exceeded .*'ml.g5.2xlarge for endpoint usage' .*eu-central-1",
        ),
        ("CreateModel", "AccessDeniedException", r"CreateModel: permission denied .*sagemaker:CreateModel"),
        (
            "RegisterScalableTarget",
            "AccessDeniedException",
            r"permission denied .*application-autoscaling:RegisterScalableTarget",
        ),
    ],
)
def test_quota_and_permission_errors_say_what_to_do(
    plane: tuple[ControlPlane, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    operation: str,
    code: str,
    expected: str,
) -> None:
    state, url = plane
    state.errors[operation] = AwsError(code, "The account-level service limit is 0 Instances / not authorized.")
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER", url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_APPLICATION_AUTO_SCALING", url)
    monkeypatch.setenv("LLMTWIN_SM_ROLE_ARN", ROLE)
    monkeypatch.setenv("LLMTWIN_SM_POLL_INTERVAL_S", "0.01")

    assert main(["up"]) == 1

    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith("error: ")
    assert re.search(expected, err), err


def test_cli_up_status_down(
    plane: tuple[ControlPlane, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    state, url = plane
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER", url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_APPLICATION_AUTO_SCALING", url)
    monkeypatch.setenv("LLMTWIN_SM_ROLE_ARN", ROLE)
    monkeypatch.setenv("LLMTWIN_SM_ENDPOINT_NAME", "twin")
    monkeypatch.setenv("LLMTWIN_SM_HF_TOKEN", "hf_secret_value")
    monkeypatch.setenv("LLMTWIN_SM_POLL_INTERVAL_S", "0.01")

    assert main(["up"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("6 change(s) applied")
    assert "LLM_SAGEMAKER_ENDPOINT_NAME=twin LLM_SAGEMAKER_INFERENCE_COMPONENT=twin-ic" in out
    assert "endpoint twin: InService after" in err
    assert "hf_secret_value" not in out + err
    assert main(["up"]) == 0
    assert capsys.readouterr().out.startswith("up to date, nothing changed")

    assert main(["status"]) == 0
    status = capsys.readouterr().out
    assert "endpoint" in status and "InService" in status and "absent" not in status

    assert main(["down"]) == 0
    assert capsys.readouterr().out.startswith("deleted 6 resource(s) of twin")
    assert main(["teardown"]) == 0  # the old verb
    assert capsys.readouterr().out.startswith("nothing to delete")
    assert main(["status"]) == 0
    assert capsys.readouterr().out.count("absent") == 6
    assert state.calls.count("CreateModel") == 1


# -- the vLLM container ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("profile", "gpus", "total", "model"),
    [("a10g-8b", "1", "4096", "mlabonne/TwinLlama-3.1-8B-DPO"), ("a100-30b", "8", "8192", "Qwen/Qwen2.5-32B-Instruct")],
)
def test_both_profiles_deploy_on_the_vllm_container(profile: str, gpus: str, total: str, model: str) -> None:
    plan = build_plan(
        DeploySettings(role_arn=ROLE, region=REGION, profile=profile, container="vllm", model_revision="abc123")
    )
    container = plan.create_model["PrimaryContainer"]
    assert container["Image"] == (
        "763104351884.dkr.ecr.eu-central-1.amazonaws.com/"
        "huggingface-vllm:0.27.1-transformers5.10.2-gpu-py312-cu130-ubuntu22.04"
    )
    assert container["Environment"] == {
        "HF_MODEL_ID": model,
        "SM_VLLM_HOST": "0.0.0.0",
        "SM_VLLM_REVISION": "abc123",
        "SM_VLLM_TENSOR_PARALLEL_SIZE": gpus,
        "SM_VLLM_MAX_MODEL_LEN": total,
    }
    variant = plan.create_endpoint_config["ProductionVariants"][0]
    assert variant["InferenceAmiVersion"] == "al2-ami-sagemaker-inference-gpu-3-1"  # CUDA 13's driver
    startup = plan.create_inference_component["Specification"]["StartupParameters"]
    assert startup["ContainerStartupHealthCheckTimeoutInSeconds"] == (900 if profile == "a10g-8b" else 1800)
    assert plan.service_env()["LLM_SAGEMAKER_PAYLOAD"] == "openai"
    assert "InferenceAmiVersion" not in build_plan(DeploySettings(profile=profile)).create_endpoint_config[
        "ProductionVariants"][0]  # fmt: skip
    quantized = build_plan(DeploySettings(profile=profile, container="vllm", quantize="fp8", num_gpus=2))
    env = quantized.create_model["PrimaryContainer"]["Environment"]
    assert (env["SM_VLLM_QUANTIZATION"], env["SM_VLLM_TENSOR_PARALLEL_SIZE"]) == ("fp8", "2")


def test_vllm_image_is_pinned_per_region_from_the_sdk_table() -> None:
    assert image_uri_for("af-south-1", "vllm").startswith(
        "626614931356.dkr.ecr.af-south-1.amazonaws.com/huggingface-vllm:"
    )
    assert image_uri_for("mx-central-1", "vllm").startswith("637423239942.dkr.ecr.mx-central-1.amazonaws.com/")
    with pytest.raises(ValueError, match="no pinned tgi image for region mx-central-1"):
        image_uri_for("mx-central-1")


# -- adapters ----------------------------------------------------------------------------------------------

ADAPTERS = {"dpo": "s3://twin-artifacts/adapters/dpo/", "style": "s3://twin-artifacts/adapters/style.tar.gz"}


def test_the_plan_adds_adapter_components_on_the_base_and_deletes_them_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMTWIN_SM_ADAPTERS", json.dumps(ADAPTERS))
    plan = build_plan(DeploySettings(role_arn=ROLE, container="vllm"))

    calls = [(c.operation, c.params) for c in plan.up_calls()]
    assert calls[-2:] == [
        (
            "CreateInferenceComponent",
            {
                "InferenceComponentName": f"llmtwin-ic-{name}",
                "EndpointName": "llmtwin",
                "Specification": {"BaseInferenceComponentName": "llmtwin-ic", "Container": {"ArtifactUrl": url}},
            },
        )
        for name, url in ADAPTERS.items()
    ]
    downs = [(c.operation, c.params) for c in plan.down_calls()]
    assert downs[:3] == [
        ("DeleteInferenceComponent", {"InferenceComponentName": "llmtwin-ic-dpo"}),
        ("DeleteInferenceComponent", {"InferenceComponentName": "llmtwin-ic-style"}),
        ("DeleteScalingPolicy", downs[2][1]),
    ]
    assert plan.service_env()["LLM_SAGEMAKER_ADAPTERS"] == "dpo=llmtwin-ic-dpo,style=llmtwin-ic-style"
    env = plan.create_model["PrimaryContainer"]["Environment"]
    assert (env["SM_VLLM_ENABLE_LORA"], env["SM_VLLM_MAX_LORAS"]) == ("true", "2")
    for bad in ({"no_underscores": "s3://b/a"}, {"a": "https://example.com/a"}, {"x" * 20: "s3://b/a"}):
        with pytest.raises(ValueError, match="adapter"):
            DeploySettings(adapters=bad)


def test_up_creates_updates_and_removes_adapters_and_down_deletes_them_before_the_base(
    plane: tuple[ControlPlane, str],
) -> None:
    state, url = plane
    deployer, _ = _deployer(url, adapters=ADAPTERS)
    deployer.up()
    assert state.writes() == [(c.operation, c.params) for c in deployer.plan.up_calls()]
    assert {n: c["InferenceComponentStatus"] for n, c in state.components.items()} == dict.fromkeys(
        ["llmtwin-ic", "llmtwin-ic-dpo", "llmtwin-ic-style"], "InService"
    )
    assert ("adapter-component", "llmtwin-ic-dpo", "InService") in [
        (r.kind, r.name, r.state) for r in deployer.status()
    ]
    state.requests.clear()
    assert deployer.up() == []

    # A new artifact for one adapter, the other dropped from the settings: updated in place, deleted.
    moved = {"dpo": "s3://twin-artifacts/adapters/dpo-v2/"}
    state.requests.clear()
    _deployer(url, adapters=moved)[0].up()
    assert state.writes() == [
        (
            "UpdateInferenceComponent",
            {
                "InferenceComponentName": "llmtwin-ic-dpo",
                "Specification": {
                    "BaseInferenceComponentName": "llmtwin-ic",
                    "Container": {"ArtifactUrl": moved["dpo"]},
                },
            },
        ),
        ("DeleteInferenceComponent", {"InferenceComponentName": "llmtwin-ic-style"}),
    ]
    assert set(state.components) == {"llmtwin-ic", "llmtwin-ic-dpo"}

    # down with settings that name no adapter still deletes the live one, before the base component.
    state.requests.clear()
    _deployer(url)[0].down()
    assert _ops(state.writes()) == [
        "DeleteInferenceComponent",
        "DeleteScalingPolicy",
        "DeregisterScalableTarget",
        "DeleteInferenceComponent",
        "DeleteEndpoint",
        "DeleteEndpointConfig",
        "DeleteModel",
    ]
    assert state.writes()[0][1] == {"InferenceComponentName": "llmtwin-ic-dpo"}
    assert not (state.components or state.endpoints or state.models)
