"""Setting types and mixins shared by the services' settings classes.

    GrpcRuntimeSettings     listen address, ports, admission, shutdown, connection age, health interval
    ServerTlsSettings       the server's certificate, key and client CA (gRPC services and the gateway)
    GrpcAuthSettings        bearer tokens and what answers without one
    GrpcServerSettings      the three above: what servekit.service.GrpcService reads
    ClientTlsSettings       how a service dials a named peer: client_tls_settings("llm", "the LLM service")
                            gives RAG_LLM_TLS, RAG_LLM_TLS_CA_FILE, ... under the RAG_ prefix

A service's settings class inherits the mixins it needs and sets its own env prefix; the variables keep their
names (`<PREFIX><FIELD>`). Fields only annotated here (port, metrics_port, ...) are declared again by each
service with its own default and description.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import BeforeValidator, Field, SecretStr, create_model
from pydantic_settings import BaseSettings, NoDecode

from servekit.tls import ClientTls, ServerTls


def split_commas(value: object) -> object:
    """An env var is one string; a comma list reads better there than JSON."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


# A connection older than this gets a GOAWAY, so its client reconnects and re-resolves the target: new replicas
# (a scale-out, a rolling update) get traffic within about this long (docs/deployment.md). gRPC adds ±10 %
# jitter so that a client's connections do not all end at once.
DEFAULT_MAX_CONNECTION_AGE_S = 30.0
# Calls in flight on an aged connection get this long to finish before it is closed: generous, since a
# generation streams for minutes on a slow model; new calls already go to the new connection meanwhile.
DEFAULT_MAX_CONNECTION_AGE_GRACE_S = 300.0

CommaList = Annotated[list[str], NoDecode, BeforeValidator(split_commas)]
CommaSecrets = Annotated[list[SecretStr], NoDecode, BeforeValidator(split_commas)]


class GrpcRuntimeSettings(BaseSettings):
    """How a gRPC service listens, admits calls and shuts down; annotated-only fields: each service's own."""

    host: str = Field(default="127.0.0.1", description="gRPC listen address.")
    port: int
    metrics_port: int
    max_concurrent: int
    max_queued: int
    queue_timeout_s: float
    shutdown_grace_s: float
    shutdown_drain_s: float = Field(default=0.5, ge=0, description="NOT_SERVING this long before refusing calls.")
    max_connection_age_s: float = Field(
        default=DEFAULT_MAX_CONNECTION_AGE_S,
        ge=0,
        description="Clients reconnect (and re-resolve DNS, finding new replicas) after this long; 0: never.",
    )
    max_connection_age_grace_s: float = Field(
        default=DEFAULT_MAX_CONNECTION_AGE_GRACE_S,
        ge=0,
        description="Calls in flight on an aged connection get this long to finish.",
    )
    health_interval_s: float


class ServerTlsSettings(BaseSettings):
    """The server's TLS (README "Security"): off by default for the loopback stack."""

    tls_cert_file: str = Field(default="", description="PEM certificate chain; set with tls_key_file to serve TLS.")
    tls_key_file: str = Field(default="", description="PEM private key of tls_cert_file.")
    tls_client_ca_file: str = Field(
        default="", description="PEM CA bundle; when set, clients must present a certificate it signed (mTLS)."
    )

    def server_tls(self) -> ServerTls:
        """The TLS configuration (files not read yet); TlsConfigError when incomplete."""
        return ServerTls(self.tls_cert_file, self.tls_key_file, self.tls_client_ca_file)


class GrpcAuthSettings(BaseSettings):
    """Bearer tokens a gRPC service accepts (README "Security"): none by default for the loopback stack."""

    auth_tokens: CommaSecrets = Field(
        default_factory=list, description="Comma-separated bearer tokens accepted; empty: no authentication."
    )
    auth_open_health: bool = Field(default=True, description="grpc.health.v1 answers without a token.")
    auth_open_reflection: bool = Field(default=True, description="Server reflection answers without a token.")


class GrpcServerSettings(GrpcAuthSettings, ServerTlsSettings, GrpcRuntimeSettings):
    """Every setting servekit.service.GrpcService reads (listed runtime first, then TLS, then auth)."""


class ClientTlsSettings(BaseSettings):
    """Base of the mixins client_tls_settings() makes; `peer` is the field prefix of the one it adds."""

    peer: ClassVar[str] = ""


def client_tls_settings(peer: str, service: str) -> type[ClientTlsSettings]:
    """A mixin for dialing `service` ("the LLM service"): `<peer>_tls`, `<peer>_tls_ca_file`,
    `<peer>_tls_cert_file`, `<peer>_tls_key_file`, `<peer>_tls_server_name` and `<peer>_auth_token`."""
    fields: dict[str, Any] = {
        f"{peer}_tls": (
            bool,
            Field(default=False, description=f"Dial {service} over TLS (on when {peer}_tls_ca_file is set)."),
        ),
        f"{peer}_tls_ca_file": (str, Field(default="", description=f"PEM CA that signed {service}'s certificate.")),
        f"{peer}_tls_cert_file": (str, Field(default="", description=f"PEM client certificate for mTLS to {service}.")),
        f"{peer}_tls_key_file": (str, Field(default="", description=f"PEM private key of {peer}_tls_cert_file.")),
        f"{peer}_tls_server_name": (str, Field(default="", description=f"Name to verify in {service}'s certificate.")),
        f"{peer}_auth_token": (SecretStr | None, Field(default=None, description=f"Bearer token sent to {service}.")),
    }
    mixin = create_model(
        f"{peer.title()}ClientTlsSettings",
        __base__=ClientTlsSettings,
        __doc__=f"How the service dials {service}.",
        __module__=__name__,
        **fields,
    )
    mixin.peer = peer
    return mixin


def client_peers(settings: BaseSettings) -> list[str]:
    """The peers a settings object has client TLS settings for (`["llm"]` for the RAG service)."""
    bases = type(settings).__mro__
    return [base.peer for base in bases if issubclass(base, ClientTlsSettings) and vars(base).get("peer")]


def peer_tls(settings: BaseSettings, peer: str) -> ClientTls:
    """How to dial `peer`, from its `<peer>_tls*` settings; TlsConfigError when incomplete."""

    def value(suffix: str) -> Any:
        return getattr(settings, f"{peer}_tls{suffix}")

    return ClientTls(value(""), value("_ca_file"), value("_cert_file"), value("_key_file"), value("_server_name"))


def peer_token(settings: BaseSettings, peer: str) -> SecretStr | None:
    """The bearer token sent to `peer` (`<peer>_auth_token`)."""
    token: SecretStr | None = getattr(settings, f"{peer}_auth_token")
    return token
