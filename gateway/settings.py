"""Gateway configuration: environment variables with the prefix GATEWAY_ (see docs/gateway.md)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    """Every setting of the gateway, with its documented default."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore")

    host: str = Field(default="127.0.0.1", description="HTTP listen address.")
    port: int = Field(default=8000, description="HTTP port.")
    rag_target: str = Field(default="127.0.0.1:50051", description="host:port of the RAG gRPC service.")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated origins allowed by CORS; empty disables CORS."
    )
    max_body_bytes: int = Field(default=64 * 1024, ge=1, description="Largest request body accepted.")
    request_timeout_s: float = Field(default=120.0, gt=0, description="gRPC deadline of each RAG call.")
    ready_timeout_s: float = Field(default=2.0, gt=0, description="Deadline of the health check behind /readyz.")
    model_name: str = Field(default="llm-twin", description="Model name shown by the OpenAI-compatible API.")
    log_level: str = Field(default="info", description="uvicorn log level.")

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        # An env var is one string; a comma list reads better there than JSON.
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value
