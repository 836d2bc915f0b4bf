"""Gateway configuration: environment variables with the prefix GATEWAY_ (see docs/gateway.md)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from servekit.settings import CommaList, CommaSecrets


class Settings(BaseSettings):
    """Every setting of the gateway, with its documented default."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore")

    host: str = Field(default="127.0.0.1", description="HTTP listen address.")
    port: int = Field(default=8000, description="HTTP port.")
    rag_target: str = Field(default="127.0.0.1:50051", description="host:port of the RAG gRPC service.")
    cors_origins: CommaList = Field(
        default_factory=list, description="Comma-separated origins allowed by CORS; empty disables CORS."
    )
    max_body_bytes: int = Field(default=64 * 1024, ge=1, description="Largest request body accepted.")
    max_query_chars: int = Field(
        default=2000,
        ge=1,
        description="Longest question accepted (stated in the OpenAPI schema); keep it equal to RAG_MAX_QUERY_CHARS.",
    )
    request_timeout_s: float = Field(default=120.0, gt=0, description="gRPC deadline of each RAG call.")
    ready_timeout_s: float = Field(default=2.0, gt=0, description="Deadline of the health check behind /readyz.")
    model_name: str = Field(default="llm-twin", description="Model name shown by the OpenAI-compatible API.")
    log_level: str = Field(default="info", description="uvicorn log level.")

    # Security (README "Security"): TLS and bearer tokens, both off by default for the loopback stack
    tls_cert_file: str = Field(default="", description="PEM certificate chain; set with tls_key_file to serve HTTPS.")
    tls_key_file: str = Field(default="", description="PEM private key of tls_cert_file.")
    tls_client_ca_file: str = Field(
        default="", description="PEM CA bundle; when set, clients must present a certificate it signed (mTLS)."
    )
    auth_tokens: CommaSecrets = Field(
        default_factory=list, description="Comma-separated bearer tokens for /v1/* and /metrics; empty: no auth."
    )
    auth_open_health: bool = Field(default=True, description="/healthz and /readyz answer without a token.")
    rag_tls: bool = Field(default=False, description="Dial the RAG service over TLS (on when rag_tls_ca_file is set).")
    rag_tls_ca_file: str = Field(default="", description="PEM CA that signed the RAG service's certificate.")
    rag_tls_cert_file: str = Field(default="", description="PEM client certificate for mTLS to the RAG service.")
    rag_tls_key_file: str = Field(default="", description="PEM private key of rag_tls_cert_file.")
    rag_tls_server_name: str = Field(default="", description="Name to verify in the RAG service's certificate.")
    rag_auth_token: SecretStr | None = Field(default=None, description="Bearer token sent to the RAG service.")
