"""Measurement 2: completed logins per second, two workers, on SQLite and on PostgreSQL.

A warm-up of `warmup` logins calibrates the count: as many logins as the warm-up rate fits in
`target_seconds` (within bounds). Then phase 1 starts all of them (each queues its mail), the
email halves are collected from the dev mailbox (not timed), and phase 2 completes them.
Completed logins per second = completions answered 200 / (phase 1 time + phase 2 time).
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
    concurrency: int = 16,
    warmup: int = 100,
    target_seconds: float = 10.0,
    min_logins: int = 200,
    max_logins: int = 4000,
) -> dict[str, Any]:
    with (
        deploy.splitlink(workdir, backend, workers=workers) as server,
        procs.CpuWindow(server) as window,
    ):
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
    }
