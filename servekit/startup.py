"""Start-up failures a user can cause, each reported as one line on stderr that names the setting to change.

    StartupError            the report: `<service>: <what failed> (<SETTING>): <why>`, exit status 1
    ListenError (OSError)   a port could not be bound; `.startup(setting)` turns it into the report

`checked_settings` reads the settings and checks their TLS files; `report` prints a StartupError as the
process's last line (no traceback). servekit.service.run_service does both for the gRPC services, and turns
what it knows can go wrong (a port in use, a bad TLS file, a bad setting value) into StartupErrors that name
the environment variable; the gateway's `__main__` does the same around uvicorn. Anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import ssl
import sys
from typing import NoReturn, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings

from servekit.settings import ServerTlsSettings, client_peers, peer_tls
from servekit.tls import ClientTls, ServerTls, TlsConfigError

EXIT_STARTUP = 1
IN_USE = "address already in use"
S = TypeVar("S", bound=BaseSettings)


class StartupError(Exception):
    """A start-up failure the user can fix; its message is the whole report and names the setting."""


class ListenError(OSError):
    """`address` could not be bound; `reason` says why in a few words ("address already in use")."""

    def __init__(self, address: str, reason: str):
        super().__init__(f"cannot listen on {address}: {reason}")
        self.address = address
        self.reason = reason

    def startup(self, port_setting: str, host_setting: str = "") -> StartupError:
        """The report naming the setting to change: the port's when it is taken, else the host's too."""
        setting = port_setting
        if host_setting and self.reason != IN_USE:
            setting = f"{host_setting} or {port_setting}"
        return StartupError(f"cannot listen on {self.address} ({setting}): {self.reason}")


def report(name: str, error: StartupError) -> NoReturn:
    """Prints `name: error` as the last line on stderr and ends the process with status 1.

    Ends it with os._exit once logs and stdio are flushed: nothing was serving yet, and a normal interpreter
    exit lets grpc's poller thread die noisily ("Error in sys.excepthook") after our line.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    print(f"{name}: {error}", file=sys.stderr, flush=True)
    os._exit(EXIT_STARTUP)


def checked_settings(cls: type[S]) -> S:
    """The settings from the environment, with the server's and each peer's TLS files read and checked now;
    StartupError names the setting to change (the variable's prefix is the class's env_prefix)."""
    env_prefix = cls.model_config.get("env_prefix") or ""
    settings = load_settings(cls, env_prefix)
    if isinstance(settings, ServerTlsSettings):
        check_server_tls(settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file, env_prefix)
    for peer in client_peers(settings):
        check_peer_tls(settings, peer, f"{env_prefix}{peer.upper()}_TLS_")
    return settings


def load_settings(cls: type[S], env_prefix: str) -> S:
    """The settings from the environment; a bad value is a StartupError naming its variable."""
    try:
        return cls()
    except ValidationError as error:
        raise settings_failure(error, env_prefix) from None


def settings_failure(error: ValidationError, env_prefix: str) -> StartupError:
    """One line for every invalid setting: `invalid LLM_BACKEND='x': input should be ...`."""
    parts = []
    for problem in error.errors():
        name = env_prefix + "_".join(str(part) for part in problem["loc"][:1]).upper()
        value = problem.get("input")
        shown = f"={value!r}" if isinstance(value, str | int | float) else ""
        parts.append(f"invalid {name}{shown}: {_first_lower(problem['msg'])}")
    return StartupError("; ".join(parts))


def why_not_bindable(host: str, port: int) -> str:
    """Why `host:port` cannot be bound, found by trying (gRPC's own error does not say)."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        return f"cannot resolve {host!r}: {error.strerror}"
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as error:
                return describe_os_error(error)
    return "the gRPC runtime could not bind it (GRPC_VERBOSITY=debug shows why)"


def describe_os_error(error: OSError) -> str:
    """`address already in use`, `permission denied`: the error's text in lower case, without the errno."""
    if error.errno == errno.EADDRINUSE:
        return IN_USE
    text = error.strerror or (os.strerror(error.errno) if error.errno else str(error))
    return _first_lower(text)


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port (not yet listening), as uvicorn binds it; ListenError when it cannot."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        shown = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
        raise ListenError(shown, describe_os_error(error)) from None
    sock.set_inheritable(True)
    return sock


def check_server_tls(cert_file: str, key_file: str, client_ca_file: str, env_prefix: str) -> ServerTls:
    """The server's TLS configuration, its files read and parsed now; StartupError names the bad setting.

    `env_prefix` is the service's (`RAG_`): the settings are `<prefix>TLS_CERT_FILE`, `..._KEY_FILE`,
    `..._CLIENT_CA_FILE`.
    """
    names = {"cert": f"{env_prefix}TLS_CERT_FILE", "key": f"{env_prefix}TLS_KEY_FILE"}
    try:
        tls = ServerTls(cert_file, key_file, client_ca_file)
    except TlsConfigError as error:
        raise StartupError(f"{error} ({names['cert']}, {names['key']}, {env_prefix}TLS_CLIENT_CA_FILE)") from None
    if tls.enabled:
        _check_certificates(cert_file, "TLS certificate", names["cert"])
        _check_key(cert_file, key_file, names["key"])
    if tls.mutual:
        _check_certificates(client_ca_file, "TLS client CA", f"{env_prefix}TLS_CLIENT_CA_FILE")
    return tls


def check_client_tls(tls: ClientTls, env_prefix: str) -> ClientTls:
    """Checks a client's TLS files now (`env_prefix`: `RAG_LLM_TLS_` → `RAG_LLM_TLS_CA_FILE`, ...)."""
    if tls.ca_file:
        _check_certificates(tls.ca_file, "TLS CA", f"{env_prefix}CA_FILE")
    if tls.cert_file:
        _check_certificates(tls.cert_file, "TLS client certificate", f"{env_prefix}CERT_FILE")
        _check_key(tls.cert_file, tls.key_file, f"{env_prefix}KEY_FILE")
    return tls


def check_peer_tls(settings: BaseSettings, peer: str, env_prefix: str) -> ClientTls:
    """How to dial `peer` (servekit.settings.peer_tls), checked; StartupError when incomplete or unreadable."""
    try:
        tls = peer_tls(settings, peer)
    except TlsConfigError as error:
        raise StartupError(f"{error} ({env_prefix}CERT_FILE, {env_prefix}KEY_FILE)") from None
    return check_client_tls(tls, env_prefix)


def _check_certificates(path: str, what: str, setting: str) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cafile=path)
    except OSError as error:  # ssl.SSLError is an OSError too
        raise StartupError(f"cannot use {path!r} as the {what} ({setting}): {_tls_reason(error)}") from None


def _check_key(cert_file: str, key_file: str, setting: str) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert_file, key_file)
    except OSError as error:
        reason = _tls_reason(error)
        if isinstance(error, ssl.SSLError):
            reason = f"not a PEM private key of the certificate {cert_file!r} ({reason})"
        raise StartupError(f"cannot use {key_file!r} as the TLS key ({setting}): {reason}") from None


def _tls_reason(error: OSError) -> str:
    if isinstance(error, ssl.SSLError):
        if error.reason == "NO_CERTIFICATE_OR_CRL_FOUND":
            return "no PEM certificate in it"
        return (error.reason or str(error)).replace("_", " ").lower()
    return describe_os_error(error)


def _first_lower(text: str) -> str:
    return text[:1].lower() + text[1:]
