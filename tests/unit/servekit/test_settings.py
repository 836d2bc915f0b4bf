"""servekit.settings: the mixins keep every variable's name, default and description, whichever service uses them."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from gateway.settings import Settings as GatewaySettings
from llm_service.settings import Settings as LlmSettings
from rag_service.settings import Settings as RagSettings
from servekit.settings import GrpcServerSettings, client_peers, client_tls_settings, peer_tls, peer_token
from servekit.tls import TlsConfigError

SERVER = [
    "HOST", "PORT", "METRICS_PORT", "MAX_CONCURRENT", "MAX_QUEUED", "QUEUE_TIMEOUT_S", "SHUTDOWN_GRACE_S",
    "SHUTDOWN_DRAIN_S", "MAX_CONNECTION_AGE_S", "MAX_CONNECTION_AGE_GRACE_S", "HEALTH_INTERVAL_S",
    "TLS_CERT_FILE", "TLS_KEY_FILE", "TLS_CLIENT_CA_FILE", "AUTH_TOKENS", "AUTH_OPEN_HEALTH", "AUTH_OPEN_REFLECTION",
]  # fmt: skip
PEER = ["TLS", "TLS_CA_FILE", "TLS_CERT_FILE", "TLS_KEY_FILE", "TLS_SERVER_NAME", "AUTH_TOKEN"]


def variables(cls: type[GrpcServerSettings] | type[GatewaySettings]) -> list[str]:
    prefix = cls.model_config.get("env_prefix") or ""
    return [f"{prefix}{name.upper()}" for name in cls.model_fields]


@pytest.mark.parametrize(("cls", "prefix"), [(LlmSettings, "LLM_"), (RagSettings, "RAG_")])
def test_the_grpc_services_list_the_server_settings_first_under_their_prefix(cls: type, prefix: str) -> None:
    assert variables(cls)[: len(SERVER)] == [prefix + name for name in SERVER]


def test_each_peer_has_its_client_tls_settings_under_the_services_prefix() -> None:
    dialing_llm = [name for name in variables(RagSettings) if name.startswith("RAG_LLM_") and name != "RAG_LLM_TARGET"]
    assert dialing_llm == [f"RAG_LLM_{name}" for name in PEER]
    assert {f"GATEWAY_RAG_{name}" for name in PEER} <= set(variables(GatewaySettings))
    assert client_peers(RagSettings()) == ["llm"]
    assert client_peers(GatewaySettings()) == ["rag"]
    assert client_peers(LlmSettings()) == []


def test_a_peer_mixin_names_its_service_in_every_description() -> None:
    fields = client_tls_settings("store", "the store").model_fields
    assert fields["store_tls"].description == "Dial the store over TLS (on when store_tls_ca_file is set)."
    assert fields["store_tls_key_file"].description == "PEM private key of store_tls_cert_file."
    assert fields["store_auth_token"].description == "Bearer token sent to the store."
    assert [field.get_default() for field in fields.values()] == [False, "", "", "", "", None]


def test_the_gateway_keeps_its_own_wording_for_https() -> None:
    described = {name: field.description for name, field in GatewaySettings.model_fields.items()}
    assert described["tls_cert_file"] == "PEM certificate chain; set with tls_key_file to serve HTTPS."
    assert described["tls_key_file"] == "PEM private key of tls_cert_file."
    assert "auth_open_reflection" not in described and "max_concurrent" not in described


def test_peer_tls_and_token_come_from_the_peers_fields() -> None:
    settings = RagSettings(llm_tls_ca_file="ca.pem", llm_tls_server_name="llm.internal", llm_auth_token=SecretStr("t"))  # type: ignore[call-arg]
    tls = peer_tls(settings, "llm")
    assert (tls.active, tls.ca_file, tls.cert_file, tls.server_name) == (True, "ca.pem", "", "llm.internal")
    token = peer_token(settings, "llm")
    assert token is not None and token.get_secret_value() == "t"
    assert not peer_tls(RagSettings(), "llm").active and peer_token(RagSettings(), "llm") is None
    with pytest.raises(TlsConfigError):
        peer_tls(GatewaySettings(rag_tls_cert_file="client.pem"), "rag")  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("cls", "defaults"),
    [
        (LlmSettings, (50052, 9102, 4, 32, 20.0, 0.5, 30.0, 300.0, 5.0)),
        (RagSettings, (50051, 9101, 16, 64, 20.0, 0.5, 30.0, 300.0, 5.0)),
    ],
)
def test_each_service_keeps_its_own_defaults(cls: type[LlmSettings | RagSettings], defaults: tuple[float, ...]) -> None:
    s = cls()
    assert (
        s.port,
        s.metrics_port,
        s.max_concurrent,
        s.max_queued,
        s.shutdown_grace_s,
        s.shutdown_drain_s,
        s.max_connection_age_s,
        s.max_connection_age_grace_s,
        s.health_interval_s,
    ) == defaults
