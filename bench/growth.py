"""Measurement 3: p99 latency of start, completion, refresh and /v1/me with N users pre-seeded
(each with a consumed attempt, a live session and a refresh token), against an empty database.

Each size runs on its own fresh database and server (two workers) with the same moderate load:
`logins` logins through every phase at `concurrency` connections, after a warm-up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import deploy, procs

PHASES = ("start", "complete", "refresh", "me")


def run_size(
    workdir: Path,
    backend: str,
    users: int,
    *,
    logins: int,
    concurrency: int,
    me_per_login: int,
    warmup: int,
) -> dict[str, Any]:
    info: dict[str, Any] = {"backend": backend, "users": users}
    with (
        deploy.splitlink(workdir, backend, workers=2, seed_users=users, info=info) as server,
        procs.CpuWindow(server) as window,
    ):
        flow, generator_cpu = deploy.loadgen(
            server,
            "flow",
            "--count",
            str(logins),
            "--warmup",
            str(warmup),
            "--concurrency",
            str(concurrency),
            "--me-per-login",
            str(me_per_login),
            "--phases",
            ",".join(PHASES),
        )
    phases = flow["phases"]
    info["phases"] = phases
    info["p99_ms"] = {name: phases[name]["latency_ms"].get("p99") for name in PHASES}
    info["p50_ms"] = {name: phases[name]["latency_ms"].get("p50") for name in PHASES}
    info["errors"] = {name: phases[name]["requests"] - phases[name]["ok"] for name in PHASES}
    info["cpu"] = window.report(generator_cpu)
    return info


def run(
    workdir: Path,
    backend: str,
    sizes: list[int],
    *,
    logins: int = 400,
    concurrency: int = 4,
    me_per_login: int = 2,
    warmup: int = 50,
    repeat_empty: bool = True,
) -> dict[str, Any]:
    """The empty database first (the baseline), then each size, then the empty database again
    when `repeat_empty`: the two empty runs show how much these p99s move by themselves."""
    runs = [
        run_size(
            workdir / f"{backend}-{index}-{users}",
            backend,
            users,
            logins=logins,
            concurrency=concurrency,
            me_per_login=me_per_login,
            warmup=warmup,
        )
        for index, users in enumerate([0, *sizes, *([0] if repeat_empty else [])])
    ]
    empty = runs[0]["p99_ms"]
    for entry in runs:
        entry["p99_ratio"] = {
            name: round(entry["p99_ms"][name] / empty[name], 3) if empty[name] else None
            for name in PHASES
        }
    return {
        "backend": backend,
        "logins": logins,
        "concurrency": concurrency,
        "me_per_login": me_per_login,
        "runs": runs,
    }
