"""Measurement 2: completed logins per second, two workers, on SQLite and on PostgreSQL.

Both servers run at once, and the logins go to one at a time, in `rounds` turns each whose
order alternates (bench.orders), so that PostgreSQL's rate is compared with SQLite's over the
same stretches of the run (the machine's speed drifts within minutes: measured one after the
other, two runs of the same server a minute apart gave 354 and 259 logins/s). First each server
gets a warm-up of `warmup` logins, not measured; the fastest warm-up's rate sets the size of
every turn, the same on every server: as many logins as it fits in `target_seconds` / `rounds`
(within bounds). In a turn, phase 1 starts all of its logins (each queues its mail), the email
halves are collected from the dev mailbox (not timed), and phase 2 completes them. Completed
logins per second = completions answered 200 / (phase 1 time + phase 2 time), summed over a
server's turns.

The figure is taken at `concurrency` connections, enough to keep the server busy: with fewer,
each client's wait for its answer (a durable commit's fsync, a turn at SQLite's write lock)
leaves the server idle, and the figure measures the clients. Each server then runs a turn's
logins once more at `also_at` connections, for orientation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench import deploy, procs
from bench.orders import rounds_of_turns
from bench.pooled import PooledTurns

ROUNDS = 4
PHASES = ("start", "complete")


def server_names(backends: Sequence[str], labels: Sequence[str | None]) -> list[str]:
    """The servers in the order their turns are drawn from: a backend's servers side by side,
    one per tree (`<backend>-<label>`), or the backend's name alone without trees."""
    return [
        backend if label is None else f"{backend}-{label}"
        for backend in backends
        for label in labels
    ]


def run(
    workdir: Path,
    backends: Sequence[str],
    *,
    rounds: int = ROUNDS,
    workers: int = 2,
    concurrency: int = 64,
    also_at: int | None = 16,
    warmup: int = 300,
    target_seconds: float = 10.0,
    min_logins: int = 200,
    max_logins: int = 4000,
    trees: Mapping[str, procs.Tree] | None = None,
) -> dict[str, dict[str, Any]]:
    """One result per backend, each over its `rounds` turns. With `trees` (label -> source
    tree), one server per backend and tree, each running that tree's code, and one result per
    server, named by `server_names`."""
    if isinstance(backends, str):
        raise TypeError("backends is a sequence of backend names, not one name")
    labelled: dict[str | None, procs.Tree] = (
        {label: tree for label, tree in trees.items()} if trees else {None: procs.THIS_TREE}
    )
    plans = dict(
        zip(
            server_names(backends, list(labelled)),
            ((backend, tree) for backend in backends for tree in labelled.values()),
            strict=True,
        )
    )
    pooled = {name: PooledTurns(PHASES) for name in plans}
    flows: dict[str, list[dict[str, Any]]] = {name: [] for name in plans}
    warmups: dict[str, dict[str, Any]] = {}
    again: dict[str, dict[str, Any]] = {}
    common = ["--phases", ",".join(PHASES)]
    with ExitStack() as stack:
        servers = {
            name: stack.enter_context(
                deploy.splitlink(workdir / name, backend, workers=workers, tree=tree)
            )
            for name, (backend, tree) in plans.items()
        }
        sessions = {
            name: stack.enter_context(deploy.loadgen_session(servers[name], workdir / name))
            for name in plans
        }
        for name in plans:
            warmups[name], _ = sessions[name].flow(
                *common, "--concurrency", str(concurrency), "--count", str(warmup)
            )
        per_turn = _turn_size(
            warmups.values(),
            target_seconds=target_seconds / rounds,
            least=max(1, min_logins // rounds),
            most=max(1, max_logins // rounds),
        )
        names = list(plans)
        for order in rounds_of_turns(len(names), rounds):
            for name in (names[i] for i in order):
                backend = plans[name][0]
                # Over the whole turn (mail dispatch and the wait for it included).
                with procs.CpuWindow(servers[name], database=backend == "postgresql") as window:
                    flow, generator_cpu = sessions[name].flow(
                        *common,
                        "--concurrency",
                        str(concurrency),
                        "--count",
                        str(per_turn),
                        "--raw",
                    )
                pooled[name].add(flow, window, generator_cpu)
                flows[name].append(flow)
        if also_at is not None:
            for name in plans:
                flow, _ = sessions[name].flow(
                    *common, "--concurrency", str(also_at), "--count", str(per_turn)
                )
                again[name] = _summary(flow, also_at)
    results = {
        name: _result(
            backend,
            pooled[name],
            flows[name],
            workers=workers,
            concurrency=concurrency,
            warmup=warmups[name],
            fewer_connections=again.get(name),
        )
        for name, (backend, _) in plans.items()
    }
    if trees:
        for name, (_, tree) in plans.items():
            results[name]["server"] = {"code": tree.where(servers[name].code)}
    return results


def _turn_size(
    warmups: Iterable[dict[str, Any]], *, target_seconds: float, least: int, most: int
) -> int:
    """The logins of every turn, the same on every server so that their rates compare alike
    (a turn's fixed costs, its connections and its last few answers, weigh more in a short
    one): as many as the fastest warm-up's rate fits in `target_seconds`, within bounds. The
    fastest, since a server's first logins also pay for what it sets up once (connections,
    prepared statements): the PostgreSQL server's warm-up ran at about 0.6 of the rate of its
    turns."""
    fastest = max((_logins_per_second(flow) for flow in warmups), default=0.0)
    return max(least, min(most, int(fastest * target_seconds)))


def _logins_per_second(flow: dict[str, Any]) -> float:
    """Completions answered 200 over the time of both phases of one flow."""
    start, complete = flow["phases"]["start"], flow["phases"]["complete"]
    seconds = start["seconds"] + complete["seconds"]
    return complete["ok"] / seconds if seconds else 0.0


def _result(
    backend: str,
    pooled: PooledTurns,
    flows: list[dict[str, Any]],
    *,
    workers: int,
    concurrency: int,
    warmup: dict[str, Any],
    fewer_connections: dict[str, Any] | None,
) -> dict[str, Any]:
    start, complete = pooled.phases["start"].report(202), pooled.phases["complete"].report(200)
    completed = complete["ok"]
    seconds = start["seconds"] + complete["seconds"]
    mail_wait = sum(float(flow["mail_wait_seconds"]) for flow in flows)
    return {
        "backend": backend,
        "workers": workers,
        "concurrency": concurrency,
        "rounds": len(flows),
        "logins": sum(int(flow["count"]) for flow in flows),
        "completed": completed,
        "start_seconds": start["seconds"],
        "complete_seconds": complete["seconds"],
        "mail_wait_seconds": round(mail_wait, 3),
        "logins_per_second": round(completed / seconds, 1) if seconds else 0.0,
        # The same logins with the wait for their mail between the phases counted too: the rate
        # at which the outbox rendered and delivered what the starts queued bounds it.
        "with_mail_logins_per_second": round(completed / (seconds + mail_wait), 1)
        if seconds
        else 0.0,
        # Each turn's rate, in the order of the rounds: how far the machine drifted.
        "turns_logins_per_second": [round(_logins_per_second(flow), 1) for flow in flows],
        # Each turn's latency percentiles per phase, in the same order.
        "turns_latency_ms": {
            phase: [flow["phases"][phase]["latency_ms"] for flow in flows] for phase in PHASES
        },
        "start": start,
        "complete": complete,
        "warmup": _summary(warmup, concurrency),
        # Over this server's turns (mail dispatch and the waits for it included).
        "cpu": pooled.cpu(),
        "server_cpu_ms_per_login": round(1000 * pooled.server_cpu / max(1, completed), 2),
        # On PostgreSQL, the database server's CPU in the same turns (part of the other CPU):
        # on one machine, the workers and the database share its cores.
        "database_cpu_ms_per_login": round(1000 * pooled.database_cpu / max(1, completed), 2)
        if backend == "postgresql"
        else None,
        # At `also_at` connections, after the turns (so outside `cpu`), on the same server.
        "fewer_connections": fewer_connections,
    }


def _summary(flow: dict[str, Any], concurrency: int | None) -> dict[str, Any]:
    return {
        "concurrency": concurrency,
        "logins": flow["count"],
        "completed": flow["phases"]["complete"]["ok"],
        "logins_per_second": round(_logins_per_second(flow), 1),
        "start_latency_ms": flow["phases"]["start"]["latency_ms"],
        "complete_latency_ms": flow["phases"]["complete"]["latency_ms"],
    }
