"""Old against new: each figure's rounds on both trees, their medians, ratio, noise and verdict.

A figure is measured once per round on each tree (bench/compare.py). The noise is how far the
old tree's own rounds lie from their median (its lowest and highest round, in percent): with
the same code on both sides, the new median lands within it. A new median outside it is called
slower or faster by how far it is from the old median.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

WITHIN_NOISE = "within noise"


@dataclass(frozen=True, slots=True)
class Figure:
    """One figure's value in each round, on the old and the new tree."""

    section: str
    name: str
    unit: str
    higher_is_better: bool
    old: tuple[float, ...]
    new: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class Comparison:
    figure: Figure
    old_median: float
    new_median: float
    ratio: float
    # The old tree's lowest and highest round against its median, in percent.
    noise_low_pct: float
    noise_high_pct: float
    verdict: str

    @property
    def noise_pct(self) -> float:
        """The spread of the old tree's rounds, in percent of their median."""
        return self.noise_high_pct - self.noise_low_pct

    def to_json(self) -> dict[str, Any]:
        return {
            "section": self.figure.section,
            "figure": self.figure.name,
            "unit": self.figure.unit,
            "higher_is_better": self.figure.higher_is_better,
            "old_rounds": list(self.figure.old),
            "new_rounds": list(self.figure.new),
            "old_median": self.old_median,
            "new_median": self.new_median,
            "ratio": round(self.ratio, 4),
            "noise_low_pct": round(self.noise_low_pct, 1),
            "noise_high_pct": round(self.noise_high_pct, 1),
            "noise_pct": round(self.noise_pct, 1),
            "verdict": self.verdict,
        }


def compare(figure: Figure) -> Comparison:
    """The medians, their ratio new/old, the old tree's noise and the verdict."""
    if not figure.old or not figure.new:
        raise ValueError(f"{figure.section}, {figure.name}: a tree has no rounds")
    old_median = statistics.median(figure.old)
    new_median = statistics.median(figure.new)
    if old_median <= 0:
        raise ValueError(f"{figure.section}, {figure.name}: the old median is {old_median}")
    ratio = new_median / old_median
    low = 100 * (min(figure.old) / old_median - 1)
    high = 100 * (max(figure.old) / old_median - 1)
    return Comparison(
        figure=figure,
        old_median=old_median,
        new_median=new_median,
        ratio=ratio,
        noise_low_pct=low,
        noise_high_pct=high,
        verdict=verdict(
            ratio=ratio,
            low_pct=low,
            high_pct=high,
            higher_is_better=figure.higher_is_better,
            rounds=len(figure.old),
        ),
    )


def verdict(
    *, ratio: float, low_pct: float, high_pct: float, higher_is_better: bool, rounds: int
) -> str:
    """Within noise when the new median lies within the old tree's rounds, else slower or
    faster by how far it is from the old median (a rate that drops, or a latency that grows,
    is slower)."""
    if rounds < 2:
        return "undecided: one round gives no noise"
    change = 100 * (ratio - 1)
    if low_pct <= change <= high_pct:
        return WITHIN_NOISE
    slower = change < 0 if higher_is_better else change > 0
    return f"{'slower' if slower else 'faster'} by {abs(change):.1f} %"


def protected_figures(result: dict[str, Any], *, old: str, new: str) -> list[Figure]:
    """Requests per second of `GET /v1/me` per algorithm, from bench.protected's result."""
    section = (
        f"GET /v1/me, {result['workers']} worker, wrk, {result['connections']} connections, "
        f"{result['backend']}"
    )
    figures = []
    for alg in ("EdDSA", "ES256"):
        old_target, new_target = result.get(f"me_{alg}-{old}"), result.get(f"me_{alg}-{new}")
        if old_target is None or new_target is None:
            continue
        figures.append(
            Figure(
                section=section,
                name=f"{alg}, requests/s",
                unit="requests/s",
                higher_is_better=True,
                old=tuple(old_target["rounds_rate"]),
                new=tuple(new_target["rounds_rate"]),
            )
        )
    return figures


LATENCIES = (("start", "start"), ("complete", "completion"))


def login_figures(
    results: dict[str, dict[str, Any]], backend: str, *, old: str, new: str
) -> list[Figure]:
    """Completed logins per second, and p50 and p99 of start and completion, on `backend`,
    from bench.logins' results for the servers `<backend>-<old>` and `<backend>-<new>`."""
    old_result, new_result = results[f"{backend}-{old}"], results[f"{backend}-{new}"]
    section = (
        f"logins, {old_result['workers']} workers, {old_result['concurrency']} connections, "
        f"{backend}"
    )
    figures = [
        Figure(
            section=section,
            name="completed logins/s",
            unit="logins/s",
            higher_is_better=True,
            old=tuple(old_result["turns_logins_per_second"]),
            new=tuple(new_result["turns_logins_per_second"]),
        )
    ]
    for phase, called in LATENCIES:
        for percentile in ("p50", "p99"):
            figures.append(
                Figure(
                    section=section,
                    name=f"{called} {percentile}, ms",
                    unit="ms",
                    higher_is_better=False,
                    old=_turn_latencies(old_result, phase, percentile),
                    new=_turn_latencies(new_result, phase, percentile),
                )
            )
    return figures


def _turn_latencies(result: dict[str, Any], phase: str, percentile: str) -> tuple[float, ...]:
    """A turn without a single answer has no percentiles: it is left out."""
    turns = result["turns_latency_ms"][phase]
    return tuple(float(turn[percentile]) for turn in turns if percentile in turn)


def table(comparisons: Sequence[Comparison]) -> str:
    """A Markdown table: a row per figure, under its section's name."""
    lines = [
        "| figure | old | new | new/old | noise (old's rounds) | verdict |",
        "|---|---:|---:|---:|---:|---|",
    ]
    section = None
    for comparison in comparisons:
        figure = comparison.figure
        if figure.section != section:
            section = figure.section
            lines.append(f"| **{section}** | | | | | |")
        lines.append(
            f"| {figure.name} | {shown(comparison.old_median)} | "
            f"{shown(comparison.new_median)} | {comparison.ratio:.3f} | "
            f"{comparison.noise_low_pct:+.1f} .. {comparison.noise_high_pct:+.1f} % | "
            f"{comparison.verdict} |"
        )
    return "\n".join(lines)


def shown(value: float) -> str:
    """Three significant figures or more: 1,234 / 123.4 / 12.34 / 1.234."""
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.1f}"
    if abs(value) >= 10:
        return f"{value:.2f}"
    return f"{value:.3f}"
