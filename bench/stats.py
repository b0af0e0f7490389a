"""Percentiles without numpy (the nearest-rank method: p99 of 1000 samples is the 990th)."""

from __future__ import annotations

import math
import random


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


def percentile_ratio_interval(
    values: list[float],
    baseline: list[float],
    *,
    q: float,
    rng: random.Random,
    level: float = 0.90,
    resamples: int = 1000,
) -> tuple[float, float] | None:
    """A bootstrap interval for percentile(values) / percentile(baseline) at `q`: both samples are
    drawn again with replacement, `resamples` times, and the central `level` of the ratios so
    obtained is the interval. A p99 of a few hundred latencies rests on its few largest ones, so
    a single ratio says little about whether the limit is kept; this says how far it could move."""
    if not values or not baseline:
        return None
    ratios = []
    for _ in range(resamples):
        below = percentile(sorted(rng.choices(baseline, k=len(baseline))), q)
        if below > 0:
            ratios.append(percentile(sorted(rng.choices(values, k=len(values))), q) / below)
    if not ratios:
        return None
    ratios.sort()
    tail = 100 * (1 - level) / 2
    return percentile(ratios, tail), percentile(ratios, 100 - tail)
