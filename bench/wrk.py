"""Running wrk with bench/me.lua, and reading its report."""

from __future__ import annotations

import re
import resource
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.procs import Server, machine_busy_seconds

SCRIPT = Path(__file__).with_name("me.lua")
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


@dataclass
class WrkResult:
    requests: int
    seconds: float
    non_2xx: int
    socket_errors: int
    latency_ms: dict[str, float]
    proofs_used: int
    server_cpu_seconds: float
    generator_cpu_seconds: float
    machine_busy_seconds: float

    @property
    def ok(self) -> int:
        return self.requests - self.non_2xx

    @property
    def rate(self) -> float:
        """Answers with a 2xx status per second: refusals are not throughput."""
        return self.ok / self.seconds if self.seconds else 0.0

    @property
    def server_cpu_us_per_request(self) -> float:
        return 1e6 * self.server_cpu_seconds / self.ok if self.ok else float("nan")

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "rate": round(self.rate, 1),
            "server_cpu_us_per_request": round(self.server_cpu_us_per_request, 1),
            "server_cpu_cores": round(self.server_cpu_seconds / self.seconds, 3),
            "generator_cpu_cores": round(self.generator_cpu_seconds / self.seconds, 3),
            # Everything else the machine did meanwhile: other processes are noise.
            "other_cpu_cores": round(
                max(
                    0.0,
                    self.machine_busy_seconds
                    - self.server_cpu_seconds
                    - self.generator_cpu_seconds,
                )
                / self.seconds,
                3,
            ),
        }


def wrk_path() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise RuntimeError("wrk is not installed (Debian: apt-get install wrk; `make bench` does)")
    return path


def _duration_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_report(text: str) -> dict[str, Any]:
    found = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", text)
    if found is None:
        raise ValueError(f"unexpected wrk output:\n{text}")
    latency = {
        f"p{m.group(1)}": round(_duration_ms(m.group(2)), 3)
        for m in re.finditer(r"^\s+(50|75|90|99)%\s+(\S+)", text, re.MULTILINE)
    }
    socket = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    used = re.search(r"proofs_used (\d+)", text)
    return {
        "requests": int(found.group(1)),
        "seconds": _duration_ms(found.group(2) + found.group(3)) / 1000,
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": sum(int(g) for g in socket.groups()) if socket else 0,
        "latency_ms": latency,
        "proofs_used": int(used.group(1)) if used else 0,
    }


def run(
    server: Server,
    proofs_file: Path,
    *,
    seconds: float,
    connections: int = 32,
    threads: int = 1,
    cycle: bool = False,
) -> WrkResult:
    """One wrk run against `server`'s /v1/me; the server's CPU is read from /proc around it."""
    command = [
        wrk_path(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "--timeout",
        "10s",
        "-s",
        str(SCRIPT),
        server.url + "/v1/me",
        "--",
        str(proofs_file),
        "cycle" if cycle else "once",
        str(threads),
    ]
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_before = server.cpu_seconds()
    busy_before, _ = machine_busy_seconds()
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    cpu_after = server.cpu_seconds()
    busy_after, _ = machine_busy_seconds()
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr}\n{done.stdout}")
    report = parse_report(done.stdout)
    if time.monotonic() - started < seconds * 0.5:
        raise RuntimeError(f"wrk ended early:\n{done.stdout}")
    generator = (children_after.ru_utime + children_after.ru_stime) - (
        children_before.ru_utime + children_before.ru_stime
    )
    return WrkResult(
        **report,
        server_cpu_seconds=cpu_after - cpu_before,
        generator_cpu_seconds=generator,
        machine_busy_seconds=busy_after - busy_before,
    )
