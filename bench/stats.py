"""Percentiles without numpy (the nearest-rank method: p99 of 1000 samples is the 990th)."""

from __future__ import annotations

import math


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize(seconds: list[float]) -> dict[str, float | int]:
    """Latencies in seconds -> count and percentiles in milliseconds."""
    values = sorted(seconds)
    if not values:
        return {"count": 0}
    return {
        "count": len(values),
        "p50": round(percentile(values, 50) * 1000, 3),
        "p90": round(percentile(values, 90) * 1000, 3),
        "p99": round(percentile(values, 99) * 1000, 3),
        "max": round(values[-1] * 1000, 3),
    }
