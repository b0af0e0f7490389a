"""Measurement 4: each worker's RSS under a steady, moderate load.

Two workers on SQLite; the load generator (bench/loadgen.py soak) runs rounds of logins through
every phase at a paced rate. RSS is sampled every `interval` seconds. The baseline is the RSS
after the warm-up (the first `warmup_fraction` of the run: imports, caches and connection pools
fill up then); growth is the RSS at the end over that baseline. The RSS right after start is
reported too.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from bench import deploy, procs


def run(
    workdir: Path,
    *,
    seconds: float,
    rate: float = 20.0,
    concurrency: int = 4,
    round_size: int = 20,
    me_per_login: int = 4,
    interval: float = 1.0,
    warmup_fraction: float = 0.2,
    backend: str = "sqlite",
) -> dict[str, Any]:
    samples: list[dict[str, Any]] = []
    with deploy.splitlink(workdir, backend, workers=2) as server:
        cold = server.worker_rss()
        stop = threading.Event()
        started = time.monotonic()

        def sample() -> None:
            while not stop.is_set():
                try:
                    rss = server.worker_rss()
                except OSError:
                    rss = {}
                samples.append({"t": round(time.monotonic() - started, 2), "rss": rss})
                stop.wait(interval)

        sampler = threading.Thread(target=sample, daemon=True)
        with procs.CpuWindow(server) as window:
            sampler.start()
            try:
                result, generator_cpu = deploy.loadgen(
                    server,
                    "soak",
                    "--duration",
                    str(seconds),
                    "--rate",
                    str(rate),
                    "--concurrency",
                    str(concurrency),
                    "--round-size",
                    str(round_size),
                    "--me-per-login",
                    str(me_per_login),
                    timeout=seconds + 120,
                )
            finally:
                stop.set()
                sampler.join()
        final = server.worker_rss()
        samples.append({"t": round(time.monotonic() - started, 2), "rss": final})
    baseline_at = seconds * warmup_fraction
    baseline_sample = next((s for s in samples if s["t"] >= baseline_at), samples[0])
    workers = []
    for index, pid in enumerate(sorted(cold)):
        start_rss = baseline_sample["rss"].get(pid, cold[pid])
        # A worker that exited (and was replaced) has no end: that is a failure, not a figure.
        end_rss = final.get(pid)
        workers.append(
            {
                "worker": index + 1,
                "pid": pid,
                "exited": end_rss is None,
                "rss_cold_mb": round(cold[pid] / 2**20, 1),
                "rss_start_mb": round(start_rss / 2**20, 1),
                "rss_end_mb": round(end_rss / 2**20, 1) if end_rss is not None else None,
                "growth": round(end_rss / start_rss, 3) if end_rss and start_rss else None,
                "slope_mb_per_minute": _slope(
                    [(x["t"], x["rss"][pid]) for x in samples if pid in x["rss"]],
                    since=baseline_sample["t"],
                ),
                "series_mb": [
                    [s["t"], round(s["rss"][pid] / 2**20, 1)] for s in samples if pid in s["rss"]
                ],
            }
        )
    return {
        "backend": backend,
        "seconds": seconds,
        "rate": rate,
        "concurrency": concurrency,
        "baseline_at_seconds": baseline_sample["t"],
        "load": result,
        "workers": workers,
        "cpu": window.report(generator_cpu),
    }


def _slope(points: list[tuple[float, int]], *, since: float) -> float | None:
    """Least-squares slope of RSS after the warm-up, in MB per minute: a leak keeps rising
    where a cache levels off."""
    after = [(t, rss / 2**20) for t, rss in points if t >= since]
    if len(after) < 3:
        return None
    mean_t = sum(t for t, _ in after) / len(after)
    mean_m = sum(m for _, m in after) / len(after)
    spread = sum((t - mean_t) ** 2 for t, _ in after)
    if not spread:
        return None
    return round(60 * sum((t - mean_t) * (m - mean_m) for t, m in after) / spread, 3)
