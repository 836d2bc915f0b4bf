"""The whole chain secured, on loopback: gateway (HTTPS, bearer tokens) → RAG service (TLS, tokens) → LLM service
(mutual TLS, tokens), configured through the services' own environment variables with certificates made for the
test; then a grep of everything the run wrote (logs, error messages, metrics, Opik traces) for the secrets.
Also the safe defaults: loopback binds, no TLS or tokens needed by the local stack."""

from __future__ import annotations

import asyncio
import inspect
import io
import json
import logging
import os
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field

import grpc
import httpx
import openai
import prometheus_client
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.app import create_app
from gateway.settings import Settings as GatewaySettings
from llm_service.backends.echo import EchoBackend
from llm_service.server import LlmServer
from llm_service.settings import Settings as LlmSettings
from llmtwin.llm.v1 import llm_service_pb2 as llm_pb
from llmtwin.llm.v1 import llm_service_pb2_grpc
from llmtwin.rag.v1 import rag_service_pb2 as pb
from llmtwin.rag.v1 import rag_service_pb2_grpc
from rag_service.opik_export import OpikTracer
from rag_service.opik_sdk import OpikSettings
from rag_service.server import RagServer
from rag_service.settings import Settings as RagSettings
from servekit.auth import client_interceptors
from servekit.errors import error_reason
from servekit.grpc_app import start_metrics
from servekit.logs import JsonFormatter
from servekit.tls import ClientTls, ServerTls, open_channel
from tests.support.certs import Pki, make_pki
from tests.support.fake_opik import FakeOpik, running_fake_opik
from tests.support.gateway import serving
from tests.support.procs import grpcurl_path
from tests.support.rag import corpus

# Every value below must never appear in anything the stack writes.
SECRETS = {
    "LLM_AUTH_TOKENS": "llm-tok-8f3a1d,llm-tok-rotated-77c2",
    "LLM_TGI_TOKEN": "hf_tgi_Secr3tTgiTokenValue",
    "RAG_AUTH_TOKENS": "rag-tok-5e9b0a",
    "RAG_LLM_AUTH_TOKEN": "llm-tok-8f3a1d",
    "RAG_QDRANT_API_KEY": "qdrant-key-0d4c6b",
    "GATEWAY_AUTH_TOKENS": "gw-tok-3b7e21",
    "GATEWAY_RAG_AUTH_TOKEN": "rag-tok-5e9b0a",
    "HF_TOKEN": "hf_FakeHubToken0123456789abcdef",
    "AWS_ACCESS_KEY_ID": "AKIAFAKEKEY7EXAMPLE1",
    "AWS_SECRET_ACCESS_KEY": "wJalrFAKEsecretKEY/K7MDENG/bPxRfiCYEXAMPLE",
    "AWS_SESSION_TOKEN": "FwoGZXIvYXdzFAKEsessionTOKEN",
    "OPIK_API_KEY": "opik-key-Fake42",
}
GW_TOKEN = SECRETS["GATEWAY_AUTH_TOKENS"]
RAG_TOKEN = SECRETS["RAG_AUTH_TOKENS"]
LLM_TOKEN = SECRETS["RAG_LLM_AUTH_TOKEN"]


def secret_values() -> set[str]:
    """Each secret, and each token of a comma list."""
    return {part for value in SECRETS.values() for part in value.split(",")}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA, a server certificate for localhost/127.0.0.1, a client certificate for the services' hops."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    """Every log record of the process at DEBUG, written by the services' own JSON formatter (extras included)."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    saved = root.level, {name: logging.getLogger(name).level for name in ("opik", "httpx", "httpcore", "urllib3")}
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    for name in saved[1]:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(saved[0])
        for name, level in saved[1].items():
            logging.getLogger(name).setLevel(level)


@pytest.fixture
def secured_env(monkeypatch: pytest.MonkeyPatch, pki: Pki) -> None:
    """The secrets and the TLS paths as the deployment would set them: environment variables."""
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    tls = {
        "LLM_TLS_CERT_FILE": pki.server.cert,
        "LLM_TLS_KEY_FILE": pki.server.key,
        "LLM_TLS_CLIENT_CA_FILE": pki.ca,
        "RAG_TLS_CERT_FILE": pki.server.cert,
        "RAG_TLS_KEY_FILE": pki.server.key,
        "RAG_LLM_TLS_CA_FILE": pki.ca,
        "RAG_LLM_TLS_CERT_FILE": pki.client.cert,
        "RAG_LLM_TLS_KEY_FILE": pki.client.key,
        "GATEWAY_TLS_CERT_FILE": pki.server.cert,
        "GATEWAY_TLS_KEY_FILE": pki.server.key,
        "GATEWAY_RAG_TLS_CA_FILE": pki.ca,
    }
    for name, value in tls.items():
        monkeypatch.setenv(name, value)


@dataclass
class SecuredStack:
    """The three services running secured, and what a client needs to reach them."""

    pki: Pki
    llm_port: int
    rag_port: int
    gateway_url: str
    opik: FakeOpik
    settings: list[object] = field(default_factory=list)

    def https(self, **kwargs: object) -> httpx.AsyncClient:
        """An HTTPS client trusting the test CA."""
        return httpx.AsyncClient(
            base_url=self.gateway_url, verify=ssl.create_default_context(cafile=self.pki.ca), **kwargs
        )  # type: ignore[arg-type]


def _uvicorn(app: object, settings: GatewaySettings) -> AbstractAsyncContextManager[str]:
    tls = ServerTls(settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file)
    # log_config None: records go to the root logger, as `python -m gateway` sets it up
    return serving(app, url_host="localhost", log_config=None, log_level="debug", **tls.uvicorn_options())


@pytest.fixture
async def stack(
    secured_env: None, pki: Pki, embedder: object, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[SecuredStack]:
    """LLM (echo backend), RAG (in-memory store, Opik tracing to a fake) and gateway, all read from the env."""
    async with AsyncExitStack() as stack:
        opik = stack.enter_context(running_fake_opik())
        for name, value in {
            "OPIK_URL_OVERRIDE": opik.url,
            "OPIK_WORKSPACE": "default",
            "OPIK_PROJECT_NAME": "security-tests",
            "OPIK_BACKGROUND_WORKERS": "1",
            "OPIK_DEFAULT_FLUSH_TIMEOUT": "1",
        }.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("OPIK_TRACK_DISABLE", raising=False)

        llm_settings = LlmSettings(
            port=0, metrics_port=0, backend="echo", health_interval_s=0.2, shutdown_grace_s=1, shutdown_drain_s=0
        )
        llm = LlmServer(llm_settings, EchoBackend())
        llm_port = await llm.start()
        stack.push_async_callback(llm.stop)

        rag_settings = RagSettings(
            port=0,
            metrics_port=0,
            llm_target=f"localhost:{llm_port}",
            store_backend="client",
            qdrant_path=":memory:",
            health_interval_s=0.1,
            shutdown_grace_s=1,
            shutdown_drain_s=0,
        )
        tracer = OpikTracer(OpikSettings.from_env(os.environ, "security-tests"), sample_rate=1.0, flush_timeout_s=2.0)
        rag = RagServer(rag_settings, embedder=embedder, tracer=tracer)  # type: ignore[arg-type]
        rag_port = await rag.start()
        stack.push_async_callback(rag.stop)

        gateway_settings = GatewaySettings(rag_target=f"localhost:{rag_port}", request_timeout_s=20)
        url = await stack.enter_async_context(_uvicorn(create_app(gateway_settings), gateway_settings))
        yield SecuredStack(pki, llm_port, rag_port, url, opik, [llm_settings, rag_settings, gateway_settings])


def _rag_channel(s: SecuredStack, token: str | None = RAG_TOKEN) -> grpc.aio.Channel:
    return open_channel(f"localhost:{s.rag_port}", ClientTls(ca_file=s.pki.ca), interceptors=client_interceptors(token))


async def _wait_serving(channel: grpc.aio.Channel, service: str) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for _ in range(200):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        if reply.status == health_pb2.HealthCheckResponse.SERVING:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{service} never became SERVING")


@pytest.mark.slow
async def test_secured_chain_answers_authenticated_callers_and_leaks_no_secret(
    stack: SecuredStack, captured_logs: io.StringIO
) -> None:
    written: list[str] = []  # everything the stack wrote back to callers or to its operators

    async with _rag_channel(stack) as channel:
        await _wait_serving(channel, "llmtwin.rag.v1.RagService")  # RAG → LLM over mTLS with a token
        rag = rag_service_pb2_grpc.RagServiceStub(channel)
        ingested = await rag.IngestDocuments(
            iter(pb.IngestDocumentsRequest(document=d) for d in corpus(limit=4)), timeout=30
        )
        assert ingested.documents_written == 4

    async with stack.https() as http:
        headers = {"authorization": f"Bearer {GW_TOKEN}"}
        body = {"query": "What is a KV cache?", "parameters": {"max_new_tokens": 6}}
        answer = await http.post("/v1/answer", json=body, headers=headers)
        assert answer.status_code == 200, answer.text
        assert answer.json()["final"]["usage"]["completion_tokens"] == 6
        streamed = await http.post("/v1/answer/stream", json=body, headers=headers)
        assert streamed.status_code == 200 and "event: done" in streamed.text
        written += [answer.text, streamed.text, json.dumps(dict(answer.headers))]

        refused = await http.post("/v1/answer", json=body)
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        wrong = await http.post("/v1/answer", json=body, headers={"authorization": f"Bearer {RAG_TOKEN}"})
        assert wrong.status_code == 401  # another service's token is not the gateway's
        written += [refused.text, wrong.text]
        assert (await http.get("/readyz")).status_code == 200  # open health, through TLS and a token to RAG

        sdk = openai.AsyncOpenAI(base_url=f"{stack.gateway_url}/v1", api_key=GW_TOKEN, http_client=http, max_retries=0)
        completion = await sdk.chat.completions.create(
            model="llm-twin", messages=[{"role": "user", "content": "What is a KV cache?"}], max_tokens=5
        )
        assert completion.usage is not None and completion.usage.completion_tokens == 5
        metrics = await http.get("/metrics", headers=headers)
        written.append(metrics.text)

    async with httpx.AsyncClient() as plain:
        with pytest.raises(httpx.TransportError):
            await plain.get(f"{stack.gateway_url.replace('https', 'http')}/healthz")

    # Each gRPC hop refuses what it must: no token, plaintext, no client certificate.
    async with _rag_channel(stack, token=None) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as no_token:
            await rag_service_pb2_grpc.RagServiceStub(channel).Answer(pb.AnswerRequest(query="hi"), timeout=10)
        assert (
            no_token.value.code() == grpc.StatusCode.UNAUTHENTICATED and error_reason(no_token.value) == "MISSING_TOKEN"
        )
        written += [str(no_token.value), no_token.value.debug_error_string()]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.rag_port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as plaintext:
            await rag_service_pb2_grpc.RagServiceStub(channel).Answer(pb.AnswerRequest(query="hi"), timeout=10)
        assert plaintext.value.code() == grpc.StatusCode.UNAVAILABLE
    llm_request = llm_pb.GetModelInfoRequest()
    async with open_channel(f"localhost:{stack.llm_port}", ClientTls(ca_file=stack.pki.ca)) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as no_cert:
            await llm_service_pb2_grpc.LlmServiceStub(channel).GetModelInfo(llm_request, timeout=10)
        assert no_cert.value.code() == grpc.StatusCode.UNAVAILABLE
    client_cert = ClientTls(ca_file=stack.pki.ca, cert_file=stack.pki.client.cert, key_file=stack.pki.client.key)
    async with open_channel(f"localhost:{stack.llm_port}", client_cert) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as cert_no_token:
            await llm_service_pb2_grpc.LlmServiceStub(channel).GetModelInfo(llm_request, timeout=10)
        assert cert_no_token.value.code() == grpc.StatusCode.UNAUTHENTICATED
        written.append(str(cert_no_token.value))

    # The real grpcurl, as the README shows it: CA file and the token as a header.
    answered = await asyncio.to_thread(
        subprocess.run,
        [
            grpcurl_path(),
            "-cacert",
            stack.pki.ca,
            "-H",
            f"authorization: Bearer {RAG_TOKEN}",
            "-max-time",
            "20",
            "-d",
            json.dumps({"query": "What is a KV cache?", "parameters": {"max_new_tokens": 3}}),
            f"localhost:{stack.rag_port}",
            "llmtwin.rag.v1.RagService/Answer",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert answered.returncode == 0 and '"final"' in answered.stdout, answered.stderr
    listed = await asyncio.to_thread(
        subprocess.run,
        [grpcurl_path(), "-cacert", stack.pki.ca, f"localhost:{stack.rag_port}", "list"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "llmtwin.rag.v1.RagService" in listed.stdout, listed.stderr  # reflection stays open by default

    assert stack.opik.wait_for(traces=3, spans=3, timeout_s=15), "the answers' traces did not reach Opik"
    written += [json.dumps(stack.opik.traces), json.dumps(stack.opik.spans)]
    written.append(prometheus_client.generate_latest().decode())  # the gRPC services' metrics registry
    for settings in stack.settings:
        written += [repr(settings), str(settings), settings.model_dump_json()]  # type: ignore[attr-defined]
    written.append(captured_logs.getvalue())
    assert "unauthenticated call refused" in captured_logs.getvalue()
    assert "unauthenticated request refused" in captured_logs.getvalue()

    everything = "\n".join(written)
    leaked = sorted(name for name, value in SECRETS.items() for part in value.split(",") if part in everything)
    assert not leaked, f"secrets found in what the stack wrote: {leaked}"


def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET: a UDP connect picks the outgoing interface, sends nothing
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") else address


async def test_defaults_bind_loopback_without_tls_or_tokens(embedder: object) -> None:
    llm_defaults, rag_defaults, gateway_defaults = LlmSettings(), RagSettings(), GatewaySettings()
    assert {llm_defaults.host, rag_defaults.host, gateway_defaults.host} == {"127.0.0.1"}
    assert inspect.signature(start_metrics).parameters["host"].default == "127.0.0.1"
    assert gateway_defaults.cors_origins == []
    for s in (llm_defaults, rag_defaults, gateway_defaults):
        assert not s.tls_cert_file and not s.auth_tokens
    assert not rag_defaults.llm_tls and rag_defaults.llm_auth_token is None
    assert not gateway_defaults.rag_tls and gateway_defaults.rag_auth_token is None

    server = LlmServer(LlmSettings(port=0, metrics_port=0, shutdown_grace_s=0, shutdown_drain_s=0), EchoBackend())
    port = await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:  # plaintext, no token: as before
            info = await llm_service_pb2_grpc.LlmServiceStub(channel).GetModelInfo(
                llm_pb.GetModelInfoRequest(), timeout=5
            )
            assert info.model_id == "echo"
        if (address := _non_loopback_address()) is not None:
            with pytest.raises(OSError), socket.create_connection((address, port), timeout=2):
                pass
    finally:
        await server.stop()


def test_settings_never_print_their_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    for settings in (LlmSettings(), RagSettings(), GatewaySettings()):
        text = f"{settings!r} {settings} {settings.model_dump()} {settings.model_dump_json()}"
        assert not [v for v in secret_values() if v in text]
    assert [t.get_secret_value() for t in LlmSettings().auth_tokens] == SECRETS["LLM_AUTH_TOKENS"].split(",")
    assert RagSettings().qdrant_api_key is not None and GatewaySettings().rag_auth_token is not None
