"""`python -m bench`: run the measurements, print one table, write JSON and a chart.

python -m bench            # `make bench`: 4 to 5 minutes on 2 cores
python -m bench --full     # `make bench-full`: also 100,000 users, growth and /v1/me on
                           # PostgreSQL, growth from twice the logins (about 10 minutes)
python -m bench --soak     # `make soak`: the 10-minute memory soak alone
python -m bench --smoke    # every measurement, tiny (tests/bench: about 25 s)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import growth, logins, memory, pg, protected, report
from bench.procs import ROOT

RESULTS = ROOT / "bench" / "results"


def machine() -> dict[str, Any]:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    memory_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory_kb = int(line.split()[1])
    cores = os.cpu_count() or 0
    memory_gb = round(memory_kb / 2**20, 1)
    import starlette
    import uvicorn

    return {
        "nproc": cores,
        "cpu_model": model,
        "memory_gb": memory_gb,
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "uvicorn": uvicorn.__version__,
        "starlette": starlette.__version__,
        "summary": f"{cores} cores, {model}, {memory_gb} GB",
    }


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    return {"commit": git("rev-parse", "--short", "HEAD"), "dirty": bool(git("status", "-s"))}


def guarded(name: str, action: Callable[[], Any], log: list[str]) -> Any:
    """One measurement; a failure is recorded and the others still run."""
    started = time.monotonic()
    print(f"bench: {name} ...", file=sys.stderr, flush=True)
    try:
        result = action()
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        result = {"error": f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
    log.append(f"{name}: {time.monotonic() - started:.0f} s")
    print(f"bench: {name} done in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--full", action="store_true", help="every size on both backends")
    mode.add_argument("--smoke", action="store_true", help="tiny runs: checks the harness only")
    mode.add_argument("--soak", action="store_true", help="the memory soak alone")
    parser.add_argument("--soak-seconds", type=float, default=None)
    parser.add_argument(
        "--only", default="", help="comma-separated: protected,logins,growth,memory"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.json")
    parser.add_argument("--chart", type=Path, default=None, help="default: --out with .png")
    parser.add_argument(
        "--summary", type=Path, default=None, help="the results page; default: --out with .md"
    )
    parser.add_argument("--workdir", type=Path, default=RESULTS / "work")
    args = parser.parse_args(argv)

    started = time.monotonic()
    chosen = set(filter(None, args.only.split(","))) or {"protected", "logins", "growth", "memory"}
    if args.soak:
        chosen = {"memory"}
    postgres_problem = pg.available()
    backends = ["sqlite"] + ([] if postgres_problem else ["postgresql"])
    if args.smoke:
        soak_seconds = args.soak_seconds or 3.0
    elif args.soak:
        soak_seconds = args.soak_seconds or 600.0
    else:
        soak_seconds = args.soak_seconds or 45.0
    mode_name = (
        "smoke" if args.smoke else "full" if args.full else "soak" if args.soak else "default"
    )
    results: dict[str, Any] = {
        "schema": 1,
        "mode": mode_name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine(),
        "git": git_state(),
        "skipped": [],
    }
    if postgres_problem:
        results["skipped"].append(f"postgresql: {postgres_problem}")
    timings: list[str] = []
    work = args.workdir
    if work.exists():
        shutil.rmtree(work)

    if "protected" in chosen:
        if shutil.which("wrk") is None:
            results["protected"] = {"skipped": "wrk is not installed (apt-get install wrk)"}
        elif args.smoke:
            results["protected"] = guarded(
                "protected requests",
                lambda: protected.run(
                    work / "protected",
                    seconds=1,
                    warmup=0,
                    rounds=1,
                    connections=4,
                    algorithms=("EdDSA",),
                    references=("bare", "ed25519_stored"),
                ),
                timings,
            )
        else:
            results["protected"] = guarded(
                "protected requests", lambda: protected.run(work / "protected"), timings
            )
            if args.full and "postgresql" in backends:
                results["protected_extra"] = [
                    guarded(
                        "protected requests on postgresql",
                        lambda: protected.run(
                            work / "protected-pg",
                            backend="postgresql",
                            algorithms=("EdDSA",),
                            references=(),
                        ),
                        timings,
                    )
                ]

    if "logins" in chosen:
        # Every backend's turns in one run, so that their rates are compared over the same time.
        measured = (
            ["sqlite"] if args.smoke else [b for b in ("sqlite", "postgresql") if b in backends]
        )
        if args.smoke:
            options: dict[str, Any] = {
                "rounds": 2,
                "warmup": 5,
                "target_seconds": 0.0,
                "min_logins": 10,
                "concurrency": 4,
                "also_at": 2,
            }
        else:
            options = {}
        outcome = guarded(
            "logins on " + " and ".join(measured),
            lambda: logins.run(work / "logins", measured, **options),
            timings,
        )
        results["logins"] = {
            backend: outcome.get(backend, outcome)
            if backend in measured
            else {"skipped": postgres_problem}
            for backend in (["sqlite"] if args.smoke else ["sqlite", "postgresql"])
        }

    if "growth" in chosen:
        results["growth"] = {}
        if args.smoke:
            plan = {"sqlite": [1000]}
            options = {
                "logins": 10,
                "rounds": 2,
                "warmup": 2,
                "concurrency": 2,
                "me_per_login": 1,
                "repeat_empty": False,
            }
        elif args.full:
            plan = {backend: [100_000, 1_000_000] for backend in backends}
            # Twice the latencies of `make bench`: at 24 rounds a p99 of 1,200 latencies moved
            # by 20 to 30 % between identical servers, which left figures near 1 undecided.
            options = {"logins": 2 * growth.LOGINS, "rounds": 2 * growth.ROUNDS}
        else:
            plan = {"sqlite": [1_000_000]}
            options = {}
        for backend, sizes in plan.items():
            results["growth"][backend] = guarded(
                f"growth on {backend}",
                lambda b=backend, s=sizes, o=options: growth.run(work / "growth", b, s, **o),  # type: ignore[misc]
                timings,
            )
        if not args.full and not args.smoke:
            results["skipped"].append(
                "growth with 100,000 users, and on postgresql: `make bench-full`"
            )

    if "memory" in chosen:
        # Moderate: half the login rate measured above (at least 5/s), or 10/s without it.
        measured = (results.get("logins") or {}).get("sqlite") or {}
        rate = (
            max(5.0, 0.5 * measured["logins_per_second"])
            if "logins_per_second" in measured
            else 10.0
        )
        results["memory"] = guarded(
            f"memory soak ({soak_seconds:.0f} s)",
            lambda: memory.run(
                work / "memory",
                seconds=soak_seconds,
                rate=round(rate, 1),
                round_size=5 if args.smoke else 20,
            ),
            timings,
        )

    rows = report.rows_for(results)
    results["rows"] = report.row_dicts(rows)
    results["timings"] = timings
    results["duration_seconds"] = round(time.monotonic() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    chart_path = report.chart(results, args.chart or args.out.with_suffix(".png"))
    results["chart"] = _shown(chart_path) if chart_path else None
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    summary_path = args.summary or args.out.with_suffix(".md")
    summary_path.parent.mkdir(parents=True, exist_ok=True)
    chart_name = (
        os.path.relpath(chart_path, summary_path.parent) if chart_path is not None else None
    )
    summary_path.write_text(report.summary(results, chart_name=chart_name))

    print()
    print(report.table(rows))
    print()
    notes = [row for row in rows if row.note]
    for row in notes:
        print(f"note: {row.section}, {row.figure}: {row.note}")
    for skipped in results["skipped"]:
        print(f"not run: {skipped}")
    print(
        f"machine: {results['machine']['summary']}; load average at start "
        f"{' '.join(results['machine']['loadavg_at_start'])}"
    )
    print(
        f"took {results['duration_seconds']:.0f} s ({', '.join(timings)}); JSON: "
        f"{_shown(args.out)}; page: {_shown(summary_path)}"
        + (f"; chart: {_shown(chart_path)}" if chart_path else "")
    )
    shutil.rmtree(work, ignore_errors=True)
    return 0


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
