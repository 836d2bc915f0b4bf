"""Start-up failures a user can cause: each service, run as a real process, ends with one line on stderr that
names the setting to change, and exit status 1 (servekit/startup.py). The cause is real each time: a port
held by a listening socket, a certificate file that is missing or not PEM, a store held by another process.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rag_service.store.edge import EdgeStore
from tests.support.certs import Pki, make_pki
from tests.support.procs import ROOT

# Every port that is not under test is 0 (any free, or off for metrics); the services never get far enough
# to need their peers.
QUIET = {
    "HF_HUB_OFFLINE": "1",
    "OPIK_TRACK_DISABLE": "true",
    "LLM_BACKEND": "echo",
    "LLM_PORT": "0",
    "LLM_METRICS_PORT": "0",
    "RAG_PORT": "0",
    "RAG_METRICS_PORT": "0",
    "RAG_STORE_BACKEND": "client",
    "RAG_QDRANT_PATH": ":memory:",
    "GATEWAY_PORT": "0",
}


def run_module(module: str, **env: str) -> tuple[int, list[str]]:
    """Runs `python -m module` until it exits by itself; its exit status and its stderr lines."""
    done = subprocess.run(
        [sys.executable, "-m", module],
        cwd=ROOT,
        env={**os.environ, **QUIET, **env},
        capture_output=True,
        text=True,
        timeout=120,  # a service that started instead of failing would run forever
        check=False,
    )
    return done.returncode, done.stderr.strip().splitlines()


@pytest.fixture
def held_port() -> Iterator[int]:
    """A loopback port held by a listening socket for the test."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield held.getsockname()[1]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA with server and client certificates."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.mark.parametrize(
    ("module", "setting"),
    [
        ("llm_service", "LLM_PORT"),
        ("llm_service", "LLM_METRICS_PORT"),
        ("rag_service", "RAG_PORT"),
        ("rag_service", "RAG_METRICS_PORT"),
        ("gateway", "GATEWAY_PORT"),
    ],
)
def test_a_port_in_use_is_one_line_naming_its_setting(module: str, setting: str, held_port: int) -> None:
    status, stderr = run_module(module, **{setting: str(held_port)})
    assert stderr[-1] == f"{module}: cannot listen on 127.0.0.1:{held_port} ({setting}): address already in use"
    assert status == 1


def test_an_address_that_is_not_ours_names_the_host_setting_too() -> None:
    status, stderr = run_module("llm_service", LLM_HOST="192.0.2.1")  # TEST-NET-1: on no interface here
    assert stderr[-1] == (
        "llm_service: cannot listen on 192.0.2.1:0 (LLM_HOST or LLM_PORT): cannot assign requested address"
    )
    assert status == 1


def test_an_unknown_llm_backend_is_one_line_naming_the_setting() -> None:
    status, stderr = run_module("llm_service", LLM_BACKEND="vllm")
    assert (
        stderr[-1]
        == "llm_service: invalid LLM_BACKEND='vllm': input should be 'embedded', 'tgi', 'sagemaker', 'openai' or 'echo'"
    )
    assert status == 1


@pytest.mark.parametrize("module", ["llm_service", "rag_service", "gateway"])
def test_a_missing_certificate_file_is_one_line_naming_the_setting(module: str, pki: Pki, tmp_path: Path) -> None:
    prefix = {"llm_service": "LLM_", "rag_service": "RAG_", "gateway": "GATEWAY_"}[module]
    missing = str(tmp_path / "missing.pem")
    env = {f"{prefix}TLS_CERT_FILE": missing, f"{prefix}TLS_KEY_FILE": pki.server.key}
    status, stderr = run_module(module, **env)
    assert stderr[-1] == (
        f"{module}: cannot use {missing!r} as the TLS certificate ({prefix}TLS_CERT_FILE): no such file or directory"
    )
    assert status == 1


def test_a_certificate_that_is_not_pem_is_one_line_naming_the_setting(pki: Pki, tmp_path: Path) -> None:
    garbage = tmp_path / "cert.pem"
    garbage.write_text("not a certificate\n")
    status, stderr = run_module("llm_service", LLM_TLS_CERT_FILE=str(garbage), LLM_TLS_KEY_FILE=pki.server.key)
    assert stderr[-1] == (
        f"llm_service: cannot use {str(garbage)!r} as the TLS certificate (LLM_TLS_CERT_FILE): no PEM certificate in it"
    )
    assert status == 1


def test_a_key_of_another_certificate_is_one_line_naming_the_key_setting(pki: Pki) -> None:
    status, stderr = run_module("rag_service", RAG_TLS_CERT_FILE=pki.server.cert, RAG_TLS_KEY_FILE=pki.client.key)
    assert stderr[-1] == (
        f"rag_service: cannot use {pki.client.key!r} as the TLS key (RAG_TLS_KEY_FILE): not a PEM private key of "
        f"the certificate {pki.server.cert!r} (key values mismatch)"
    )
    assert status == 1


def test_a_bad_client_ca_for_the_next_hop_is_one_line_naming_the_setting(tmp_path: Path) -> None:
    garbage = tmp_path / "ca.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    status, stderr = run_module("gateway", GATEWAY_RAG_TLS_CA_FILE=str(garbage))
    assert stderr[-1].startswith(f"gateway: cannot use {str(garbage)!r} as the TLS CA (GATEWAY_RAG_TLS_CA_FILE): ")
    assert status == 1


def test_a_client_certificate_without_its_key_for_the_next_hop_names_both_settings(pki: Pki) -> None:
    status, stderr = run_module("rag_service", RAG_LLM_TLS_CERT_FILE=pki.client.cert)
    assert stderr[-1] == (
        "rag_service: a client certificate needs its key file too (or neither) "
        "(RAG_LLM_TLS_CERT_FILE, RAG_LLM_TLS_KEY_FILE)"
    )
    assert status == 1


def test_a_store_held_by_another_process_is_one_line_naming_the_setting(tmp_path: Path) -> None:
    store = EdgeStore(tmp_path / "qdrant")  # as a running RAG service holds it: the shards' WAL locks
    asyncio.run(store.ensure_collections())
    try:
        status, stderr = run_module("rag_service", RAG_STORE_BACKEND="edge", RAG_QDRANT_PATH=str(tmp_path / "qdrant"))
    finally:
        asyncio.run(store.aclose())
    path = tmp_path / "qdrant"
    assert stderr[-1] == (
        f"rag_service: cannot open the store at {path} (RAG_QDRANT_PATH): the store at {path} is open in another "
        "process (a running RAG service?)"
    )
    assert status == 1
