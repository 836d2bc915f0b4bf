"""Gateway configuration: environment variables with the prefix GATEWAY_ (see docs/gateway.md)."""

from __future__ import annotations

from typing import Any

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from servekit.settings import CommaList, CommaSecrets, ServerTlsSettings, client_tls_settings

RagClientTlsSettings: Any = client_tls_settings("rag", "the RAG service")  # Any: a base mypy cannot see through


class Settings(RagClientTlsSettings, ServerTlsSettings):
    """Every setting of the gateway, with its documented default (TLS and dialing the RAG service:
    servekit.settings)."""

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
    max_history_turns: int = Field(
        default=20,
        ge=0,
        description="Most earlier turns a request may send (stated in the OpenAPI schema); keep it equal to "
        "RAG_MAX_HISTORY_TURNS.",
    )
    max_history_chars: int = Field(
        default=16000,
        ge=0,
        description="Most characters of history passed on: older turns beyond it are left out (the system turn is "
        "kept); keep it at most RAG_MAX_HISTORY_CHARS.",
    )
    request_timeout_s: float = Field(default=120.0, gt=0, description="gRPC deadline of each RAG call.")
    ready_timeout_s: float = Field(default=2.0, gt=0, description="Deadline of the health check behind /readyz.")
    model_name: str = Field(default="llm-twin", description="Model name shown by the OpenAI-compatible API.")
    log_level: str = Field(default="info", description="uvicorn log level.")

    # Security (README "Security"): HTTPS and bearer tokens, both off by default for the loopback stack
    tls_cert_file: str = Field(default="", description="PEM certificate chain; set with tls_key_file to serve HTTPS.")
    auth_tokens: CommaSecrets = Field(
        default_factory=list, description="Comma-separated bearer tokens for /v1/* and /metrics; empty: no auth."
    )
    auth_open_health: bool = Field(default=True, description="/healthz and /readyz answer without a token.")
