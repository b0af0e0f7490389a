"""The benchmark harness works and writes well-formed results. No performance figure is
asserted here: `make bench` measures, this only checks that it can."""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench import growth, report, stats, wrk
from bench.seed import seed_sqlite

ROOT = Path(__file__).resolve().parents[2]

WRK_OUTPUT = """Running 8s test @ http://127.0.0.1:4000/v1/me
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.88ms  801.12us  14.08ms   88.74%
    Req/Sec    17.15k     1.02k   18.55k    81.25%
  Latency Distribution
     50%    1.67ms
     75%  850.00us
     90%    2.77ms
     99%    1.20s
  136543 requests in 8.01s, 32.05MB read
  Non-2xx or 3xx responses: 12
Requests/sec:  17058.10
Transfer/sec:      4.00MB
proofs_used 1839
"""


def test_wrk_report_is_read_with_units() -> None:
    report_ = wrk.parse_report(WRK_OUTPUT)
    assert report_["requests"] == 136543
    assert report_["seconds"] == pytest.approx(8.01)
    assert report_["non_2xx"] == 12
    assert report_["proofs_used"] == 1839
    assert report_["latency_ms"] == {"p50": 1.67, "p75": 0.85, "p90": 2.77, "p99": 1200.0}


def test_nearest_rank_percentiles() -> None:
    values = [float(i) for i in range(1, 1001)]
    assert stats.percentile(values, 50) == 500.0
    assert stats.percentile(values, 99) == 990.0
    assert stats.summarize([0.001, 0.002])["p99"] == 2.0
    assert math.isnan(stats.percentile([], 99))


def test_a_percentile_ratio_comes_with_a_bootstrap_interval_around_it() -> None:
    rng = random.Random(7)
    base = [rng.uniform(1.0, 2.0) for _ in range(600)]
    slower = [1.5 * value for value in base]
    interval = stats.percentile_ratio_interval(slower, base, q=99, rng=random.Random(1))
    assert interval is not None
    low, high = interval
    assert low <= 1.5 <= high
    again = stats.percentile_ratio_interval(slower, base, q=99, rng=random.Random(1))
    assert again == interval  # seeded: the same samples give the same interval
    assert stats.percentile_ratio_interval([], base, q=99, rng=random.Random(1)) is None


def _growth(interval: list[float]) -> dict[str, object]:
    p99 = dict.fromkeys(report.OPERATIONS, 10.0)
    seeded = {
        "users": 1000,
        "p99_ms": dict.fromkeys(report.OPERATIONS, 12.0),
        "p99_ratio_interval": {op: interval for op in report.OPERATIONS},
        "cpu": {"other_cpu_cores": 0.0},
    }
    runs = [{"users": 0, "p99_ms": p99, "cpu": {"other_cpu_cores": 0.0}}, seeded]
    return {"sqlite": {"interval_level": 0.9, "runs": runs}}


@pytest.mark.parametrize(
    ("interval", "met", "undecided"),
    [([1.05, 1.2], True, False), ([1.3, 1.5], False, False), ([1.1, 1.4], None, True)],
)
def test_a_growth_verdict_is_given_only_when_its_interval_is_on_one_side_of_the_limit(
    interval: list[float], met: bool | None, undecided: bool
) -> None:
    rows = report.growth_rows(_growth(interval))
    assert len(rows) == len(report.OPERATIONS)
    for row in rows:
        assert row.ratio == pytest.approx(1.2)
        assert row.met is met
        assert row.caveat.startswith("undecided") is undecided
        assert f"{interval[0]:.2f}-{interval[1]:.2f}" in row.caveat


def test_a_seeded_ratio_is_bounded_by_the_spread_of_two_identical_databases() -> None:
    # In one run the control's /v1/me p99 came out at 0.74 of the baseline's, its bootstrap
    # interval 0.70-0.85: two servers differ by more than the sampling of their latencies.
    ops = growth.PHASES
    seeded = {"users": 1000, "p99_ratio_interval": {name: [1.0, 1.1] for name in ops}}
    control = {"users": 0, "p99_ratio_interval": {name: [0.8, 1.1] for name in ops}}
    growth._bound_by_the_control([seeded], control)
    for name in ops:
        low, high = seeded["p99_ratio_bounds"][name]
        assert low == pytest.approx(0.8)  # 1.0 / 1.25, the control's widest factor
        assert high == pytest.approx(1.375)
    runs = [{"users": 0, "p99_ms": dict.fromkeys(ops, 10.0), "cpu": {"other_cpu_cores": 0.0}}]
    seeded |= {"p99_ms": dict.fromkeys(ops, 10.5), "cpu": {"other_cpu_cores": 0.0}}
    rows = report.growth_rows({"sqlite": {"interval_level": 0.9, "runs": [*runs, seeded]}})
    assert all(row.met is None and "bounds 0.80-1.38" in row.caveat for row in rows)


def test_seeding_writes_consistent_rows(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SPLITLINK_")},
        "SPLITLINK_DATABASE_URL": f"sqlite:///{tmp_path / 'seeded.db'}",
        "SPLITLINK_DATA_DIR": str(tmp_path),
        "SPLITLINK_SECRET_KEY": "bench-test-secret-" + "0123456789abcdef" * 3,
    }
    splitlink = Path(sys.executable).parent / "splitlink"
    subprocess.run([str(splitlink), "migrate"], env=env, check=True, capture_output=True)
    seed_sqlite(str(tmp_path / "seeded.db"), 500)
    import sqlite3

    conn = sqlite3.connect(tmp_path / "seeded.db")
    counts = [
        conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]  # noqa: S608
        for t in ("users", "login_attempts", "sessions", "refresh_tokens")
    ]
    assert counts == [500, 500, 500, 500]
    orphans = conn.execute(
        "SELECT COUNT(*) FROM sessions s LEFT JOIN login_attempts a ON a.id = s.attempt_id "
        "LEFT JOIN users u ON u.id = s.user_id WHERE a.consumed_at IS NULL OR u.id IS NULL"
    ).fetchone()[0]
    assert orphans == 0
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


@pytest.mark.slow
def test_smoke_run_writes_a_table_json_and_a_chart(tmp_path: Path) -> None:
    out = tmp_path / "latest.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--smoke",
            "--out",
            str(out),
            "--workdir",
            str(tmp_path / "work"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| measurement" in done.stdout

    results = json.loads(out.read_text())
    assert results["mode"] == "smoke"
    assert {"machine", "git", "rows", "logins", "growth", "memory", "protected"} <= set(results)
    # Every measurement ran, or says why not (wrk absent); none failed.
    for name in ("protected", "logins", "growth", "memory"):
        assert "error" not in results[name], results[name]
    if shutil.which("wrk"):
        assert results["protected"]["me_EdDSA"]["requests"] > 0
    # A busy server may refuse some requests with 503: counted, not a harness failure.
    assert results["logins"]["sqlite"]["completed"] > 0
    assert [run["users"] for run in results["growth"]["sqlite"]["runs"]] == [0, 1000]
    assert len(results["memory"]["workers"]) == 2
    fields = set(report.Row.__dataclass_fields__)
    for row in results["rows"]:
        assert set(row) == fields
        assert row["value"] is None or isinstance(row["value"], int | float)
        assert row["met"] in (True, False, None)
    if results.get("chart"):
        assert (ROOT / results["chart"]).exists()
