"""TLS over real gRPC and HTTP on loopback, with certificates made for the test: TLS works, plaintext and
untrusted peers are refused, mutual TLS requires a client certificate signed by the configured CA."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from servekit.grpc_app import GrpcApp
from servekit.tls import ClientTls, ServerTls, TlsConfigError, open_channel
from tests.support.certs import Pki, make_pki
from tests.support.gateway import serving


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA, a server certificate for localhost/127.0.0.1, a client certificate, and an untrusted client."""
    return make_pki(tmp_path_factory.mktemp("pki"))


async def _serve(tls: ServerTls) -> tuple[GrpcApp, int]:
    app = GrpcApp("test.Service")
    port = await app.start("127.0.0.1", 0, tls.grpc_credentials())
    return app, port


@pytest.fixture
async def tls_server(pki: Pki) -> AsyncIterator[int]:
    """A gRPC server (health and reflection only) serving TLS; its port."""
    app, port = await _serve(ServerTls(pki.server.cert, pki.server.key))
    yield port
    await app.stop(0)


@pytest.fixture
async def mtls_server(pki: Pki) -> AsyncIterator[int]:
    """A gRPC server requiring client certificates signed by the test CA; its port."""
    app, port = await _serve(ServerTls(pki.server.cert, pki.server.key, client_ca_file=pki.ca))
    yield port
    await app.stop(0)


async def _check(target: str, tls: ClientTls | None) -> grpc.StatusCode:
    async with open_channel(target, tls) as channel:
        try:
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK


async def test_tls_client_trusting_the_ca_gets_answers(pki: Pki, tls_server: int) -> None:
    assert await _check(f"localhost:{tls_server}", ClientTls(ca_file=pki.ca)) == grpc.StatusCode.OK
    assert await _check(f"127.0.0.1:{tls_server}", ClientTls(ca_file=pki.ca)) == grpc.StatusCode.OK


async def test_plaintext_client_is_refused_by_a_tls_server(tls_server: int) -> None:
    assert await _check(f"127.0.0.1:{tls_server}", None) == grpc.StatusCode.UNAVAILABLE


async def test_client_not_trusting_the_servers_ca_is_refused(pki: Pki, tls_server: int) -> None:
    assert await _check(f"localhost:{tls_server}", ClientTls(ca_file=pki.other_ca)) == grpc.StatusCode.UNAVAILABLE


async def test_server_name_override_is_verified_against_the_certificate(pki: Pki, tls_server: int) -> None:
    good = ClientTls(ca_file=pki.ca, server_name="localhost")
    wrong = ClientTls(ca_file=pki.ca, server_name="rag.example.com")
    assert await _check(f"127.0.0.1:{tls_server}", good) == grpc.StatusCode.OK
    assert await _check(f"127.0.0.1:{tls_server}", wrong) == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_needs_a_client_certificate_from_the_configured_ca(pki: Pki, mtls_server: int) -> None:
    target = f"localhost:{mtls_server}"
    assert await _check(target, ClientTls(ca_file=pki.ca)) == grpc.StatusCode.UNAVAILABLE  # no client cert
    stranger = ClientTls(ca_file=pki.ca, cert_file=pki.stranger.cert, key_file=pki.stranger.key)
    assert await _check(target, stranger) == grpc.StatusCode.UNAVAILABLE
    client = ClientTls(ca_file=pki.ca, cert_file=pki.client.cert, key_file=pki.client.key)
    assert await _check(target, client) == grpc.StatusCode.OK
    assert await _check(target, None) == grpc.StatusCode.UNAVAILABLE


def test_incomplete_or_unreadable_settings_fail_at_startup_naming_the_file(tmp_path: Path, pki: Pki) -> None:
    with pytest.raises(TlsConfigError, match="key file"):
        ServerTls(cert_file=pki.server.cert)
    with pytest.raises(TlsConfigError, match="mutual TLS"):
        ServerTls(client_ca_file=pki.ca)
    with pytest.raises(TlsConfigError, match="its key"):
        ClientTls(cert_file=pki.client.cert)
    missing = str(tmp_path / "nope.pem")
    with pytest.raises(TlsConfigError, match=r"certificate file .*nope\.pem"):
        ServerTls(missing, pki.server.key).grpc_credentials()
    with pytest.raises(TlsConfigError, match="CA file"):
        ClientTls(ca_file=missing).grpc_credentials()
    with pytest.raises(TlsConfigError, match="client CA"):
        ServerTls(pki.server.cert, pki.server.key, missing).uvicorn_options()


def test_off_by_default() -> None:
    assert ServerTls().grpc_credentials() is None and ServerTls().uvicorn_options() == {}
    assert not ClientTls().active and ClientTls().grpc_credentials() is None and ClientTls().grpc_options() == []
    assert ClientTls(enabled=True).active  # system roots


async def _hello(request: object) -> PlainTextResponse:
    return PlainTextResponse("hello")


def _context(pki: Pki, client: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki.ca)
    if client:
        context.load_cert_chain(pki.client.cert, pki.client.key)
    return context


async def test_uvicorn_serves_https_and_requires_client_certificates_when_configured(pki: Pki) -> None:
    app = Starlette(routes=[Route("/", _hello)])
    tls = ServerTls(pki.server.cert, pki.server.key, client_ca_file=pki.ca)
    async with serving(app, url_host="localhost", lifespan="off", **tls.uvicorn_options()) as url:
        async with httpx.AsyncClient(verify=_context(pki, client=True)) as http:
            assert (await http.get(url + "/")).text == "hello"
        async with httpx.AsyncClient(verify=_context(pki)) as http:
            with pytest.raises(httpx.TransportError):  # no client certificate: the handshake is refused
                await http.get(url + "/")
        async with httpx.AsyncClient() as http:
            with pytest.raises(httpx.TransportError):  # plaintext HTTP to a TLS port gets no HTTP answer
                await http.get(url.replace("https://localhost", "http://127.0.0.1") + "/")
