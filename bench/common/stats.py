"""Percentiles of latency samples."""

from __future__ import annotations

from collections.abc import Sequence


def _at_rank(values: Sequence[float], rank: float) -> float:
    """The value at a 1-based rank (rounded, clamped to the samples) of the sorted values; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(rank) - 1))]


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile, the rank rounded to nearest (0 for no values)."""
    return _at_rank(values, p / 100 * len(values))


def upper_percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile, the rank rounded up (0 for no values): the soak's reports."""
    return _at_rank(values, p / 100 * len(values) + 0.5)


def p50_p99_ms(values: Sequence[float]) -> dict[str, float]:
    """p50 and p99 in ms of values in seconds."""
    return {"p50_ms": 1000 * percentile(values, 50), "p99_ms": 1000 * percentile(values, 99)}
