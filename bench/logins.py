"""Measurement 2: completed logins per second, two workers, on SQLite and on PostgreSQL.

A warm-up of `warmup` logins calibrates the count: as many logins as the warm-up rate fits in
`target_seconds` (within bounds). Then phase 1 starts all of them (each queues its mail), the
email halves are collected from the dev mailbox (not timed), and phase 2 completes them.
Completed logins per second = completions answered 200 / (phase 1 time + phase 2 time).

The figure is taken at `concurrency` connections, enough to keep the server busy: with fewer,
each client's wait for its answer (a durable commit's fsync, a turn at SQLite's write lock)
leaves the server idle, and the figure measures the clients. The same server then runs the
measurement again at `also_at` connections, for orientation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import deploy, procs


def run(
    workdir: Path,
    backend: str,
    *,
    workers: int = 2,
    concurrency: int = 64,
    also_at: int | None = 16,
    warmup: int = 100,
    target_seconds: float = 10.0,
    min_logins: int = 200,
    max_logins: int = 4000,
) -> dict[str, Any]:
    with deploy.splitlink(workdir, backend, workers=workers) as server:
        with procs.CpuWindow(server) as window:
            flow, generator_cpu = deploy.loadgen(
                server,
                "flow",
                "--count",
                str(min_logins),
                "--max-count",
                str(max_logins),
                "--warmup",
                str(warmup),
                "--target-seconds",
                str(target_seconds),
                "--concurrency",
                str(concurrency),
                "--phases",
                "start,complete",
            )
        again = None
        if also_at is not None:
            again, _ = deploy.loadgen(
                server,
                "flow",
                "--count",
                str(flow["count"]),
                "--warmup",
                "0",
                "--concurrency",
                str(also_at),
                "--phases",
                "start,complete",
            )

    start, complete = flow["phases"]["start"], flow["phases"]["complete"]
    completed = complete["ok"]
    seconds = start["seconds"] + complete["seconds"]
    return {
        "backend": backend,
        "workers": workers,
        "concurrency": concurrency,
        "logins": flow["count"],
        "completed": completed,
        "start_seconds": start["seconds"],
        "complete_seconds": complete["seconds"],
        "mail_wait_seconds": flow["mail_wait_seconds"],
        "logins_per_second": round(completed / seconds, 1) if seconds else 0.0,
        # The same logins with the wait for their mail between the phases counted too: the rate
        # at which the outbox rendered and delivered what the starts queued bounds it.
        "with_mail_logins_per_second": round(completed / (seconds + flow["mail_wait_seconds"]), 1)
        if seconds
        else 0.0,
        "start": start,
        "complete": complete,
        "warmup": flow.get("warmup"),
        # Over the whole run (warm-up, mail dispatch and waits included).
        "cpu": window.report(generator_cpu),
        "server_cpu_ms_per_login": round(
            1000 * window.server_seconds / max(1, completed + warmup), 2
        ),
        # At `also_at` connections, after the rest (so outside `cpu`), on the same server.
        "fewer_connections": None if again is None else _summary(again, also_at),
    }


def _summary(flow: dict[str, Any], concurrency: int | None) -> dict[str, Any]:
    start, complete = flow["phases"]["start"], flow["phases"]["complete"]
    seconds = start["seconds"] + complete["seconds"]
    return {
        "concurrency": concurrency,
        "logins": flow["count"],
        "completed": complete["ok"],
        "logins_per_second": round(complete["ok"] / seconds, 1) if seconds else 0.0,
        "start_latency_ms": start["latency_ms"],
        "complete_latency_ms": complete["latency_ms"],
    }
