"""Client channels between our services: round robin over every address of the target, retries within a budget.

A target that resolves to several addresses (`dns:///rag-service:50051` on a Kubernetes headless Service,
`ipv4:127.0.0.1:50061,127.0.0.1:50062`) gets one subchannel per address and spreads calls over the ready
ones; gRPC's default pick_first would send every call down one connection. The retry policy resends a
call that failed UNAVAILABLE (a replica stopping, a connection refused) to the next address. gRPC retries
a call only until it is committed, i.e. before the first response message (or header) arrives, so a
stream that has started is never replayed: its caller sees the error.

Retries happen at one hop only (docs/reliability.md, "Retries"): an error our own handler answered (a
ServiceError through servekit.rpc, e.g. "the LLM service is unavailable") carries
`grpc-retry-pushback-ms: -1`, which tells the caller's gRPC not to retry it: the server's own channel to its
dependency already retried. So only failures no handler of ours saw (connection refused or reset, a server
going away) are retried, by the channel that saw them. And every channel has a retry budget
(`retryThrottling`): once more than about half its recent attempts failed, it stops retrying until
successes refill it, so an outage costs about one attempt per call, not `maxAttempts`.
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
# gRPC's retry throttling: a token count starts at RETRY_BUDGET_TOKENS, each failed attempt takes one, each
# success gives back RETRY_BUDGET_RATIO; retries are allowed only while the count is above half the maximum.
# From full, a sustained outage is retried for its first two calls (3 + 2 attempts), then each call is tried
# once; 10 successes in a row give one retry back.
RETRY_BUDGET_TOKENS = 10
RETRY_BUDGET_RATIO = 0.1
# A re-resolution (a server's GOAWAY at its max connection age, a dropped connection) happens at most this
# often; gRPC's default, 30 s, would delay seeing a new replica by up to one more connection age.
RESOLVE_MIN_INTERVAL_MS = 1000
# Trailing metadata that tells a gRPC client not to retry the call (gRFC A6: a negative pushback).
NO_RETRY_METADATA = ("grpc-retry-pushback-ms", "-1")


def service_config(*, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> dict[str, Any]:
    """The service config: round_robin, and a retry policy (UNAVAILABLE, CANCELLED) within a budget for every
    method."""
    config: dict[str, Any] = {"loadBalancingConfig": [{"round_robin": {}}]}
    if max_attempts > 1:
        config["retryThrottling"] = {"maxTokens": RETRY_BUDGET_TOKENS, "tokenRatio": RETRY_BUDGET_RATIO}
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
                    # the first response message, a call our side cancels is never retried, and a CANCELLED
                    # our handler answered carries the no-retry pushback: only a call cut by its server (a
                    # stop past its grace: the work is gone, nothing was sent) runs again elsewhere.
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
        ("grpc.dns_min_time_between_resolutions_ms", RESOLVE_MIN_INTERVAL_MS),
    ]


def client_channel(
    target: str,
    *,
    tls: ClientTls | None = None,
    interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """An aio channel to `target` with round robin and budgeted retries; TLS and interceptors as `open_channel`
    takes them.

    `max_attempts` counts the first try (1: no retry); `options` are added after ours.
    """
    return open_channel(
        target, tls, options=[*channel_options(max_attempts=max_attempts), *options], interceptors=interceptors
    )
