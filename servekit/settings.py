"""Setting types shared by the services' settings classes."""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, SecretStr
from pydantic_settings import NoDecode


def split_commas(value: object) -> object:
    """An env var is one string; a comma list reads better there than JSON."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


CommaList = Annotated[list[str], NoDecode, BeforeValidator(split_commas)]
CommaSecrets = Annotated[list[SecretStr], NoDecode, BeforeValidator(split_commas)]
