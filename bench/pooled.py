"""A server's turns in a measurement that takes turns, added up: per phase its answers,
seconds and latencies, each turn's latencies apart, and the CPU of its turns."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bench import procs
from bench.loadgen import Phase


class PooledTurns:
    def __init__(self, phases: Iterable[str]) -> None:
        self.phases = {name: Phase(name) for name in phases}
        # Per phase, each turn's latencies apart: the unit that the intervals draw again.
        self.turns: dict[str, list[list[float]]] = {name: [] for name in self.phases}
        self.wall = self.server_cpu = self.generator_cpu = self.machine_busy = 0.0
        self.database_cpu = 0.0
        # Turns whose connections the workers did not hold in equal shares from start to end
        # (bench.placement): placed unevenly, or closed by the server and opened again.
        self.uneven_turns = 0

    def add(self, flow: dict[str, Any], window: procs.CpuWindow, generator_cpu: float) -> None:
        """One turn: a load generator flow run with `--raw`, and the CPU while it ran."""
        for name, phase in self.phases.items():
            turn = flow["phases"][name]
            latencies = [ms / 1000 for ms in turn["latencies_ms"]]
            phase.latencies += latencies
            self.turns[name].append(latencies)
            phase.statuses.update(turn["statuses"])
            phase.seconds += turn["seconds"]
            phase.sample_error = phase.sample_error or turn["sample_error"]
        placement = flow.get("connections_per_worker") or []
        if (placement and max(placement) - min(placement) > 1) or flow["connections_reopened"]:
            self.uneven_turns += 1
        self.wall += window.wall
        self.server_cpu += window.server_seconds
        self.generator_cpu += generator_cpu
        self.machine_busy += window.machine_busy_seconds
        self.database_cpu += window.database_seconds

    def cpu(self) -> dict[str, float]:
        """Over this server's turns only. The other servers, idle meanwhile (their timers still
        run), count as other CPU."""
        return procs.cpu_report(
            wall=self.wall,
            server=self.server_cpu,
            generator=self.generator_cpu,
            machine_busy=self.machine_busy,
        )
