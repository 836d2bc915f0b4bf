"""Container health probe, stdlib + grpcio only: exit 0 when the service reports healthy, 1 otherwise.

    python healthcheck.py grpc 127.0.0.1:50052 llmtwin.llm.v1.LlmService   # grpc.health.v1 Check == SERVING
    python healthcheck.py http http://127.0.0.1:8000/readyz                 # any 2xx

Docker's HEALTHCHECK runs it; Kubernetes uses its native `grpc:` / `httpGet:` probes instead.
"""

from __future__ import annotations

import sys
import urllib.request


def check_grpc(target: str, service: str, timeout_s: float = 2.0) -> bool:
    """Whether grpc.health.v1/Check answers SERVING for `service` at `target`."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        request = health_pb2.HealthCheckRequest(service=service)
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(request, timeout=timeout_s)
        except grpc.RpcError:
            return False
    return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


def check_http(url: str, timeout_s: float = 2.0) -> bool:
    """Whether GET `url` answers 2xx."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return 200 <= int(response.status) < 300
    except OSError:
        return False


def main(argv: list[str]) -> int:
    """Run one check; returns the exit code."""
    if len(argv) == 3 and argv[0] == "grpc":
        return 0 if check_grpc(argv[1], argv[2]) else 1
    if len(argv) == 2 and argv[0] == "http":
        return 0 if check_http(argv[1]) else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
