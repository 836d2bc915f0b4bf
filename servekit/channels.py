"""Client channels between our services: round robin over every address of the target, retry on UNAVAILABLE.

A target that resolves to several addresses (`dns:///rag-service:50051` on a Kubernetes headless Service,
`ipv4:127.0.0.1:50061,127.0.0.1:50062`) gets one subchannel per address and spreads calls over the ready
ones; gRPC's default pick_first would send every call down one connection. The retry policy resends a
call that failed UNAVAILABLE (a replica stopping, a connection refused) to the next address. gRPC retries
a call only until it is committed, i.e. before the first response message (or header) arrives, so a
stream that has started is never replayed: its caller sees the error.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import grpc

from servekit.tls import ClientTls, open_channel

DEFAULT_MAX_ATTEMPTS = 3
RECONNECT_INITIAL_MS = 200
RECONNECT_MAX_MS = 2000


def service_config(*, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> dict[str, Any]:
    """The service config: round_robin, and a retry policy (UNAVAILABLE, CANCELLED) for every method."""
    config: dict[str, Any] = {"loadBalancingConfig": [{"round_robin": {}}]}
    if max_attempts > 1:
        config["methodConfig"] = [
            {
                "name": [{}],  # every service and method
                "retryPolicy": {
                    "maxAttempts": max_attempts,
                    # Short: the next attempt usually goes to another replica, which is up.
                    "initialBackoff": "0.05s",
                    "maxBackoff": "0.5s",
                    "backoffMultiplier": 2,
                    # CANCELLED too: a server shutting down answers CANCELLED, not UNAVAILABLE, to calls it had
                    # received but not yet handed to a handler (grpc/grpc#41785). Retries happen only before
                    # the first response message, and a call our side cancels is never retried.
                    "retryableStatusCodes": ["UNAVAILABLE", "CANCELLED"],
                },
            }
        ]
    return config


def channel_options(*, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> list[tuple[str, Any]]:
    """Channel options carrying the service config (ours wins over one published in DNS)."""
    return [
        ("grpc.lb_policy_name", "round_robin"),
        ("grpc.enable_retries", 1 if max_attempts > 1 else 0),
        ("grpc.service_config", json.dumps(service_config(max_attempts=max_attempts))),
        ("grpc.service_config_disable_resolution", 1),
        # A peer that was down is redialled at least every 2 s: gRPC's default backoff grows to 120 s, so
        # after a long outage calls kept failing UNAVAILABLE for up to two minutes after the peer came back
        # (tests/integration/test_faults.py).
        ("grpc.initial_reconnect_backoff_ms", RECONNECT_INITIAL_MS),
        ("grpc.max_reconnect_backoff_ms", RECONNECT_MAX_MS),
    ]


def client_channel(
    target: str,
    *,
    tls: ClientTls | None = None,
    interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """An aio channel to `target` with round robin and retries; TLS and interceptors as `open_channel` takes them.

    `max_attempts` counts the first try (1: no retry); `options` are added after ours.
    """
    return open_channel(
        target, tls, options=[*channel_options(max_attempts=max_attempts), *options], interceptors=interceptors
    )
