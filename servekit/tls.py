"""TLS for our gRPC servers, gRPC channels and the gateway's uvicorn, from PEM file paths in the settings.

Off unless configured: an empty certificate path means plaintext, as the local stack runs. A server with a
client CA requires and verifies client certificates (mutual TLS); a client with a certificate and key presents
them. Files are read when the server or channel is built (startup), never per request.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc


class TlsConfigError(ValueError):
    """A TLS setting is incomplete or names a file that cannot be read."""


def read_pem(path: str, what: str) -> bytes:
    """The bytes of a PEM file; TlsConfigError names the setting's role when it cannot be read."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TlsConfigError(f"cannot read the TLS {what} file {path!r}: {exc.strerror}") from None


@dataclass(frozen=True, slots=True)
class ServerTls:
    """A server's certificate chain and key; with `client_ca_file`, clients must present a certificate it signed."""

    cert_file: str = ""
    key_file: str = ""
    client_ca_file: str = ""

    def __post_init__(self) -> None:
        if bool(self.cert_file) != bool(self.key_file):
            raise TlsConfigError("TLS needs both a certificate file and a key file (or neither)")
        if self.client_ca_file and not self.cert_file:
            raise TlsConfigError("a client CA file (mutual TLS) needs the server's certificate and key too")

    @property
    def enabled(self) -> bool:
        """True when a certificate is configured."""
        return bool(self.cert_file)

    @property
    def mutual(self) -> bool:
        """True when clients must present a certificate."""
        return bool(self.client_ca_file)

    def grpc_credentials(self) -> grpc.ServerCredentials | None:
        """Credentials for `add_secure_port`, or None when TLS is off."""
        if not self.enabled:
            return None
        pair = (read_pem(self.key_file, "key"), read_pem(self.cert_file, "certificate"))
        roots = read_pem(self.client_ca_file, "client CA") if self.mutual else None
        return grpc.ssl_server_credentials([pair], root_certificates=roots, require_client_auth=self.mutual)

    def uvicorn_options(self) -> dict[str, Any]:
        """Keyword arguments for `uvicorn.run` / `uvicorn.Config` (empty when TLS is off)."""
        if not self.enabled:
            return {}
        for path, what in ((self.cert_file, "certificate"), (self.key_file, "key"), (self.client_ca_file, "client CA")):
            if path:
                read_pem(path, what)  # fail at startup with the setting's name, not deep inside ssl
        options: dict[str, Any] = {"ssl_certfile": self.cert_file, "ssl_keyfile": self.key_file}
        if self.mutual:
            options |= {"ssl_ca_certs": self.client_ca_file, "ssl_cert_reqs": ssl.CERT_REQUIRED}
        return options


@dataclass(frozen=True, slots=True)
class ClientTls:
    """How a client dials a TLS server: CA to verify it (system roots when empty), optional client certificate.

    `server_name` overrides the name checked against the server's certificate (dialing by IP address, or
    through a proxy whose name differs from the certificate's).
    """

    enabled: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    server_name: str = ""

    def __post_init__(self) -> None:
        if bool(self.cert_file) != bool(self.key_file):
            raise TlsConfigError("a client certificate needs its key file too (or neither)")

    @property
    def active(self) -> bool:
        """TLS is on when asked for or when a CA or client certificate is given."""
        return self.enabled or bool(self.ca_file or self.cert_file)

    def grpc_credentials(self) -> grpc.ChannelCredentials | None:
        """Channel credentials, or None for a plaintext channel."""
        if not self.active:
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=read_pem(self.ca_file, "CA") if self.ca_file else None,
            private_key=read_pem(self.key_file, "client key") if self.key_file else None,
            certificate_chain=read_pem(self.cert_file, "client certificate") if self.cert_file else None,
        )

    def grpc_options(self) -> list[tuple[str, Any]]:
        """Channel options this configuration needs (the server name override)."""
        return [("grpc.ssl_target_name_override", self.server_name)] if self.active and self.server_name else []


def open_channel(
    target: str,
    tls: ClientTls | None = None,
    *,
    options: Sequence[tuple[str, Any]] = (),
    interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
) -> grpc.aio.Channel:
    """A secure channel when `tls` is active, else a plaintext one; interceptors (e.g. auth) when given."""
    tls = tls or ClientTls()
    credentials = tls.grpc_credentials()
    all_options = [*options, *tls.grpc_options()]
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=all_options, interceptors=interceptors or None)
    return grpc.aio.secure_channel(target, credentials, options=all_options, interceptors=interceptors or None)
