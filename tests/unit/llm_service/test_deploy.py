"""SageMaker deployment tooling: presets, dry-run payloads, and deploy/status/teardown over the AWS wire.

moto covers the model step and the tolerant deletes. It lacks the rest (inference components, the
`sagemaker:inference-component:DesiredCopyCount` dimension, g5/p4d instance types, model-less variants), so
the full flow runs against `ControlPlane`: a loopback server speaking the AWS JSON 1.1 protocol for the
SageMaker and Application Auto Scaling calls the deployer makes, with AWS's error codes and state changes.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from moto import mock_aws

from llm_service.deploy import DeployError, DeploySettings, SageMakerDeployer, build_plan
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
        self.endpoint_failure: str | None = None
        self.lock = threading.Lock()

    def handle(self, op: str, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.calls.append(op)
            return getattr(self, op)(body)

    @staticmethod
    def _advance(store: dict[str, dict[str, Any]], name: str, key: str, failure: str | None = None) -> None:
        # Called after a describe answered: Creating → InService (or Failed), Deleting → gone.
        state = store[name][key]
        if state == "Creating":
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
        if body["Specification"]["ModelName"] not in self.models:
            raise _not_found("model", body["Specification"]["ModelName"])
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

    def DeleteInferenceComponent(self, body: dict[str, Any]) -> dict[str, Any]:
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


def _deployer(url: str | None, **settings: Any) -> tuple[SageMakerDeployer, Any]:
    """A deployer on clients for `url` (None: moto), and its SageMaker client for checks."""
    session = boto3.session.Session(region_name=REGION)
    sagemaker = session.client("sagemaker", endpoint_url=url)
    plan = build_plan(DeploySettings(role_arn=ROLE, region=REGION, **settings))
    deployer = SageMakerDeployer(
        plan, sagemaker, session.client("application-autoscaling", endpoint_url=url), poll_s=0.01
    )
    return deployer, sagemaker


def test_8b_preset_is_the_books_quantized_a10g_deployment() -> None:
    plan = build_plan(DeploySettings(role_arn=ROLE))
    env = plan.create_model["PrimaryContainer"]["Environment"]
    assert env == {
        "HF_MODEL_ID": "mlabonne/TwinLlama-3.1-8B-DPO",
        "SM_NUM_GPUS": "1",
        "HF_MODEL_QUANTIZE": "bitsandbytes",
        "MAX_INPUT_LENGTH": "2048",
        "MAX_TOTAL_TOKENS": "4096",
        "MAX_BATCH_TOTAL_TOKENS": "16384",
    }
    assert plan.create_model["PrimaryContainer"]["Image"].startswith(
        "763104351884.dkr.ecr.eu-central-1.amazonaws.com/huggingface-pytorch-tgi-inference:"
    )
    [variant] = plan.create_endpoint_config["ProductionVariants"]
    assert "ModelName" not in variant  # inference-component endpoints take the model from the component
    assert variant["VariantName"] == "AllTraffic"
    assert variant["InstanceType"] == "ml.g5.2xlarge"
    assert variant["ManagedInstanceScaling"] == {"Status": "ENABLED", "MinInstanceCount": 1, "MaxInstanceCount": 2}
    assert variant["RoutingConfig"] == {"RoutingStrategy": "LEAST_OUTSTANDING_REQUESTS"}
    spec = plan.create_inference_component["Specification"]
    assert spec["ComputeResourceRequirements"] == {
        "NumberOfAcceleratorDevicesRequired": 1,
        "MinMemoryRequiredInMb": 5120,
    }


def test_30b_preset_shards_the_model_unquantized_over_eight_a100s() -> None:
    plan = build_plan(DeploySettings(role_arn=ROLE, preset="30b-a100", max_copies=3))
    env = plan.create_model["PrimaryContainer"]["Environment"]
    assert env["SM_NUM_GPUS"] == "8"
    assert "HF_MODEL_QUANTIZE" not in env
    [variant] = plan.create_endpoint_config["ProductionVariants"]
    assert variant["InstanceType"] == "ml.p4d.24xlarge"
    # One 8-GPU copy per instance: three copies need three instances.
    assert variant["ManagedInstanceScaling"]["MaxInstanceCount"] == 3
    spec = plan.create_inference_component["Specification"]
    assert spec["ComputeResourceRequirements"]["NumberOfAcceleratorDevicesRequired"] == 8


def test_settings_and_overrides_come_from_llmtwin_sm_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMTWIN_SM_PRESET", "30b-a100")
    monkeypatch.setenv("LLMTWIN_SM_MODEL_ID", "me/twin-30b")
    monkeypatch.setenv("LLMTWIN_SM_CONTAINER_ENV", '{"HF_MODEL_QUANTIZE": "eetq"}')
    monkeypatch.setenv("LLMTWIN_SM_IMAGE_URI", "1.dkr.ecr.x/tgi:custom")
    monkeypatch.setenv("LLMTWIN_SM_INSTANCE_TYPE", "ml.p4de.24xlarge")
    monkeypatch.setenv("LLMTWIN_SM_TARGET_INVOCATIONS_PER_COPY", "4")
    plan = build_plan(DeploySettings())
    container = plan.create_model["PrimaryContainer"]
    assert container["Image"] == "1.dkr.ecr.x/tgi:custom"
    assert container["Environment"]["HF_MODEL_ID"] == "me/twin-30b"
    assert container["Environment"]["HF_MODEL_QUANTIZE"] == "eetq"
    assert plan.create_endpoint_config["ProductionVariants"][0]["InstanceType"] == "ml.p4de.24xlarge"
    assert plan.put_scaling_policy["TargetTrackingScalingPolicyConfiguration"]["TargetValue"] == 4.0

    with pytest.raises(ValueError, match="max_copies"):
        DeploySettings(min_copies=3, max_copies=2)
    with pytest.raises(ValueError, match="role_arn"):
        DeploySettings(role_arn="llmtwin-role")


def test_dry_run_prints_the_requests_with_the_token_masked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LLMTWIN_SM_HF_TOKEN", "hf_secret_value")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")  # a dry run needs no AWS at all

    assert main(["deploy", "--dry-run"]) == 0

    out = capsys.readouterr().out
    requests, end = json.JSONDecoder().raw_decode(out)
    assert list(requests) == [
        "CreateModel",
        "CreateEndpointConfig",
        "CreateEndpoint",
        "CreateInferenceComponent",
        "RegisterScalableTarget",
        "PutScalingPolicy",
    ]
    env = requests["CreateModel"]["PrimaryContainer"]["Environment"]
    assert env["HF_MODEL_QUANTIZE"] == "bitsandbytes"
    assert (env["MAX_INPUT_LENGTH"], env["MAX_TOTAL_TOKENS"]) == ("2048", "4096")
    assert env["HUGGING_FACE_HUB_TOKEN"] == env["HF_TOKEN"] == "***"
    assert "hf_secret_value" not in out
    policy = requests["PutScalingPolicy"]["TargetTrackingScalingPolicyConfiguration"]
    assert policy["PredefinedMetricSpecification"]["PredefinedMetricType"] == (
        "SageMakerInferenceComponentInvocationsPerCopy"
    )
    assert out[end:].strip().splitlines()[-1] == (
        "LLM_BACKEND=sagemaker LLM_SAGEMAKER_ENDPOINT_NAME=llmtwin "
        "LLM_SAGEMAKER_INFERENCE_COMPONENT=llmtwin-ic AWS_REGION=eu-central-1"
    )

    assert main(["teardown", "--dry-run", "--preset", "30b-a100"]) == 0
    assert list(json.loads(capsys.readouterr().out)) == [
        "DeleteScalingPolicy",
        "DeregisterScalableTarget",
        "DeleteInferenceComponent",
        "DeleteEndpoint",
        "DeleteEndpointConfig",
        "DeleteModel",
    ]


def test_model_step_and_deletes_are_idempotent_on_moto() -> None:
    with mock_aws():
        deployer, sagemaker = _deployer(None, hf_token="hf_x")
        assert deployer.create_model() is True
        assert deployer.create_model() is False
        model = sagemaker.describe_model(ModelName="llmtwin-model")
        assert model["PrimaryContainer"]["Environment"]["HF_MODEL_ID"] == "mlabonne/TwinLlama-3.1-8B-DPO"
        assert model["ExecutionRoleArn"] == ROLE

        for _ in range(2):
            deployer.delete_endpoint()
            deployer.delete_endpoint_config()
            deployer.delete_model()
        assert sagemaker.list_models()["Models"] == []


def test_deploy_creates_everything_once_and_a_rerun_changes_nothing(plane: tuple[ControlPlane, str]) -> None:
    state, url = plane
    deployer, _ = _deployer(url, max_copies=3)

    deployer.deploy()

    creates = [c for c in state.calls if c.startswith(("Create", "Register", "Put"))]
    assert creates == [
        "CreateModel",
        "CreateEndpointConfig",
        "CreateEndpoint",
        "CreateInferenceComponent",
        "RegisterScalableTarget",
        "PutScalingPolicy",
    ]
    assert state.endpoints["llmtwin"]["EndpointStatus"] == "InService"
    assert state.targets["inference-component/llmtwin-ic"]["MaxCapacity"] == 3
    assert {(r.kind, r.state) for r in deployer.status()} == {
        ("model", "exists"),
        ("endpoint-config", "exists"),
        ("endpoint", "InService"),
        ("inference-component", "InService (copies 1/1)"),
        ("scalable-target", "copies 1..3"),
        ("scaling-policy", "TargetTrackingScaling"),
    }

    state.calls.clear()
    deployer.deploy()
    assert [c for c in state.calls if c.startswith("Create")] == []


def test_teardown_deletes_in_reverse_order_and_a_second_run_is_a_no_op(plane: tuple[ControlPlane, str]) -> None:
    state, url = plane
    deployer, _ = _deployer(url)
    deployer.deploy()
    state.calls.clear()

    deployer.teardown()

    deletes = [c for c in state.calls if c.startswith(("Delete", "Deregister"))]
    assert deletes == [
        "DeleteScalingPolicy",
        "DeregisterScalableTarget",
        "DeleteInferenceComponent",
        "DeleteEndpoint",
        "DeleteEndpointConfig",
        "DeleteModel",
    ]
    assert not (state.models or state.configs or state.endpoints or state.components or state.targets)

    state.calls.clear()
    deployer.teardown()
    assert [c for c in state.calls if c.startswith(("Delete", "Deregister"))] == [
        "DeleteEndpointConfig",  # these two delete directly and take "Could not find" as done
        "DeleteModel",
    ]
    assert all(r.state is None for r in deployer.status())


def test_a_failed_endpoint_stops_deploy_with_the_reason(plane: tuple[ControlPlane, str]) -> None:
    state, url = plane
    state.endpoint_failure = "Insufficient capacity for ml.g5.2xlarge"

    with pytest.raises(DeployError, match="Insufficient capacity"):
        _deployer(url)[0].deploy()
    assert "CreateInferenceComponent" not in state.calls


def test_cli_deploys_reports_and_tears_down(
    plane: tuple[ControlPlane, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    state, url = plane
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER", url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_APPLICATION_AUTO_SCALING", url)
    monkeypatch.setenv("LLMTWIN_SM_ROLE_ARN", ROLE)
    monkeypatch.setenv("LLMTWIN_SM_ENDPOINT_NAME", "twin")
    monkeypatch.setenv("LLMTWIN_SM_POLL_INTERVAL_S", "0.01")

    assert main(["deploy"]) == 0
    assert "LLM_SAGEMAKER_ENDPOINT_NAME=twin LLM_SAGEMAKER_INFERENCE_COMPONENT=twin-ic" in capsys.readouterr().out

    assert main(["status"]) == 0
    status = capsys.readouterr().out
    assert "endpoint" in status and "InService" in status and "absent" not in status

    assert main(["teardown"]) == 0
    assert main(["status"]) == 0
    assert capsys.readouterr().out.count("absent") == 6
    assert state.calls.count("CreateModel") == 1
