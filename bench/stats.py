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


def paired_rounds_percentile_ratio_interval(
    values_by_round: list[list[float]],
    baseline_by_round: list[list[float]],
    *,
    q: float,
    rng: random.Random,
    level: float = 0.90,
    resamples: int = 1000,
) -> tuple[float, float] | None:
    """A bootstrap interval for the ratio of the pooled percentiles at `q`, where the samples
    come in rounds: round i of `values_by_round` and round i of `baseline_by_round` were
    measured one right after the other. Whole rounds are drawn again with replacement, both
    sides of a round together, and the central `level` of the ratios is the interval.

    Latencies are not independent draws: a slow stretch (a checkpoint, a stalled fsync, the
    machine busy elsewhere) slows many requests of one turn at once, and the few largest
    latencies, on which a p99 rests, often come from one such stretch. Drawing single latencies
    again treats them as independent and gives an interval too narrow: two identical empty
    databases then came out apart by more than their intervals allowed (refresh 1.35-1.88 in
    one run, 0.57-0.76 in another). Drawing rounds keeps such a stretch whole, and keeping the
    two sides of a round together keeps what the machine did to both at about the same time."""
    rounds = [
        (values, baseline)
        for values, baseline in zip(values_by_round, baseline_by_round, strict=True)
        if values and baseline
    ]
    if not rounds:
        return None
    ratios = []
    for _ in range(resamples):
        drawn = rng.choices(rounds, k=len(rounds))
        below = percentile(sorted(x for _, baseline in drawn for x in baseline), q)
        if below > 0:
            ratios.append(percentile(sorted(x for values, _ in drawn for x in values), q) / below)
    if not ratios:
        return None
    ratios.sort()
    tail = 100 * (1 - level) / 2
    return percentile(ratios, tail), percentile(ratios, 100 - tail)
