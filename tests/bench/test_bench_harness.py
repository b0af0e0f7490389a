"""The benchmark harness works and writes well-formed results. No performance figure is
asserted here: `make bench` measures, this only checks that it can."""

from __future__ import annotations

import collections
import itertools
import json
import math
import os
import random
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import deploy, growth, logins, placement, procs, report, stats, wrk
from bench import orders as orders_of_turns
from bench.pooled import PooledTurns
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


def test_a_percentile_ratio_comes_with_an_interval_from_whole_rounds_drawn_again() -> None:
    rng = random.Random(7)
    base = [[rng.uniform(1.0, 2.0) for _ in range(50)] for _ in range(24)]
    slower = [[1.5 * value for value in turn] for turn in base]
    interval = stats.paired_rounds_percentile_ratio_interval(
        slower, base, q=99, rng=random.Random(1)
    )
    assert interval is not None
    low, high = interval
    assert low <= 1.5 <= high
    again = stats.paired_rounds_percentile_ratio_interval(slower, base, q=99, rng=random.Random(1))
    assert again == interval  # seeded: the same samples give the same interval
    assert stats.paired_rounds_percentile_ratio_interval([], [], q=99, rng=rng) is None


def test_a_slow_stretch_within_one_round_widens_the_interval() -> None:
    # Slow latencies that come together in one turn: drawn as single latencies they look like
    # many independent ones, and the interval would be too narrow to cover two identical servers.
    rng = random.Random(3)
    base = [[rng.uniform(1.0, 2.0) for _ in range(50)] for _ in range(24)]
    bursty = [list(turn) for turn in base]
    bursty[5] = [10.0] * 20 + bursty[5][20:]
    interval = stats.paired_rounds_percentile_ratio_interval(
        bursty, base, q=99, rng=random.Random(1)
    )
    assert interval is not None
    low, high = interval
    # Without the round that holds the stretch, the p99s are alike; with it twice, far apart.
    assert low < 1.5 and high > 4.0


def test_an_interval_is_widened_on_a_log_scale_about_its_centre() -> None:
    low, high = growth.widened((0.8, 1.25), 1.3)
    assert math.sqrt(low * high) == pytest.approx(1.0)
    assert high == pytest.approx(1.25**1.3) and low == pytest.approx(0.8**1.3)
    assert growth.widened((1.1, 1.2), 1.0) == pytest.approx((1.1, 1.2))


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


def test_a_server_is_deployed_only_on_a_known_backend(tmp_path: Path) -> None:
    # An unknown name once made a PostgreSQL database that nothing dropped afterwards.
    with pytest.raises(ValueError), deploy.splitlink(tmp_path, "postgres", workers=1):
        pass
    with pytest.raises(TypeError):
        logins.run(tmp_path, "sqlite")


def test_turn_orders_put_every_server_first_and_after_each_other_equally_often() -> None:
    # A turn's leftover work runs into the next turn: no server may always follow the same one.
    for n in range(1, 8):
        orders = orders_of_turns.balanced_orders(n)
        assert all(sorted(order) == list(range(n)) for order in orders)
        firsts = collections.Counter(order[0] for order in orders)
        assert set(firsts) == set(range(n)) and len(set(firsts.values())) == 1
        after = collections.Counter(pair for order in orders for pair in itertools.pairwise(order))
        assert len(after) == n * (n - 1) and len(set(after.values())) <= 1
    assert orders_of_turns.balanced_orders(2) == [[0, 1], [1, 0]]
    assert orders_of_turns.balanced_orders(4) == [
        [0, 1, 3, 2],
        [1, 2, 0, 3],
        [2, 3, 1, 0],
        [3, 0, 2, 1],
    ]


def _login_flow(*, ok: int, seconds: float, latencies_ms: list[float]) -> dict[str, Any]:
    """A load generator's login flow as `--raw` reports it, with one 503 in each phase."""

    def phase(expected: int) -> dict[str, object]:
        return {
            "requests": ok + 1,
            "ok": ok,
            "statuses": {str(expected): ok, "503": 1},
            "seconds": seconds,
            "latencies_ms": latencies_ms,
            "latency_ms": stats.summarize([ms / 1000 for ms in latencies_ms]),
            "sample_error": None,
        }

    return {
        "count": ok + 1,
        "mail_wait_seconds": 0.5,
        "connections_reopened": 0,
        "phases": {"start": phase(202), "complete": phase(200)},
    }


def test_a_servers_login_figure_adds_up_its_turns_and_pools_their_latencies() -> None:
    flows = [
        _login_flow(ok=100, seconds=1.0, latencies_ms=[10.0] * 99),
        _login_flow(ok=100, seconds=3.0, latencies_ms=[30.0] * 99),
    ]
    window = _window(server=2.0, wall=4.0, busy=5.0)
    pooled = PooledTurns(logins.PHASES)
    for flow in flows:
        pooled.add(flow, window, 0.5)
    result = _login_result("sqlite", pooled, flows)
    # 200 completions over (1 + 1) + (3 + 3) seconds of phases.
    assert result["logins_per_second"] == 25.0
    assert result["turns_logins_per_second"] == [50.0, 16.7]
    assert (result["logins"], result["completed"], result["rounds"]) == (202, 200, 2)
    assert result["complete"]["statuses"] == {"200": 200, "503": 2}
    assert result["complete"]["latency_ms"]["p50"] == 10.0
    assert result["complete"]["latency_ms"]["p99"] == 30.0
    assert result["mail_wait_seconds"] == 1.0
    assert result["cpu"]["server_cpu_seconds"] == 4.0
    # Busy 10 s, of it 4 the server's and 1 the load generator's, over 8 s of turns.
    assert result["cpu"]["other_cpu_cores"] == 0.625
    assert result["server_cpu_ms_per_login"] == 20.0
    assert result["database_cpu_ms_per_login"] is None


def test_a_login_on_postgresql_costs_the_workers_and_the_database_server() -> None:
    flows = [_login_flow(ok=100, seconds=1.0, latencies_ms=[10.0] * 99)]
    windows = {
        "sqlite": _window(server=1.0, wall=2.0, busy=1.0),
        "postgresql": _window(server=2.0, wall=2.0, busy=3.5, database=1.5),
    }
    results = {}
    for backend, window in windows.items():
        pooled = PooledTurns(logins.PHASES)
        pooled.add(flows[0], window, 0.0)
        results[backend] = _login_result(backend, pooled, flows)
    assert results["postgresql"]["server_cpu_ms_per_login"] == 20.0
    assert results["postgresql"]["database_cpu_ms_per_login"] == 15.0
    rows = {
        (row.section, row.figure): row
        for row in report.login_rows(results)
        if row.figure == "CPU per login, workers + database"
    }
    on_postgresql = rows[("logins, 2 workers, postgresql", "CPU per login, workers + database")]
    assert (on_postgresql.value, on_postgresql.baseline) == (35.0, 10.0)
    assert on_postgresql.ratio == 3.5
    assert rows[("logins, 2 workers, sqlite", "CPU per login, workers + database")].value == 10.0


def _window(*, server: float, wall: float, busy: float, database: float = 0.0) -> procs.CpuWindow:
    """A finished CPU window with these seconds, as if measured."""
    window = procs.CpuWindow.__new__(procs.CpuWindow)
    window.server_seconds, window.wall, window.machine_busy_seconds = server, wall, busy
    window.database_seconds = database
    return window


def _login_result(backend: str, pooled: PooledTurns, flows: list[dict[str, Any]]) -> dict[str, Any]:
    return logins._result(
        backend,
        pooled,
        flows,
        workers=2,
        concurrency=64,
        warmup=flows[0],
        fewer_connections=None,
    )


def test_a_cpu_window_counts_the_postgresql_servers_own_work() -> None:
    import psycopg
    from support.backends import postgres_url

    class NoServer:
        def cpu_seconds(self) -> float:
            return 0.0

    with psycopg.connect(postgres_url()) as conn:
        conn.execute("SELECT 1")
        with procs.CpuWindow(NoServer(), database=True) as window:  # type: ignore[arg-type]
            conn.execute("SELECT count(*) FROM generate_series(1, 5000000)").fetchone()
    assert window.database_seconds >= 0.1
    assert window.database_seconds <= window.machine_busy_seconds + 0.05


def test_every_server_gets_turns_of_one_size_from_the_fastest_warm_up() -> None:
    slow = _login_flow(ok=100, seconds=1.0, latencies_ms=[])  # 50 logins/s
    fast = _login_flow(ok=100, seconds=0.25, latencies_ms=[])  # 200 logins/s
    assert logins._turn_size([slow, fast], target_seconds=2.5, least=10, most=1000) == 500
    assert logins._turn_size([slow, fast], target_seconds=2.5, least=10, most=300) == 300
    assert logins._turn_size([slow], target_seconds=0.0, least=10, most=1000) == 10


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
def test_the_worker_holding_a_connection_is_found_by_its_ports() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        server_port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", server_port)) as client:
            accepted, _ = listener.accept()
            with accepted:
                client_port = client.getsockname()[1]
                assert placement.owning_worker(server_port, client_port, [os.getpid()]) == (
                    os.getpid()
                )
                # Not held by the process asked about; no such connection at all.
                assert placement.owning_worker(server_port, client_port, [os.getppid()]) is None
                assert placement.owning_worker(server_port, server_port, [os.getpid()]) is None


@pytest.mark.anyio
async def test_the_floor_app_writes_a_new_replay_entry_and_reads_the_session_on_every_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The floor under /v1/me does the storage work of a real request even though the load
    generator reuses its proofs: a new entry each time, and a session that must be live."""
    import httpx

    from bench import apps
    from bench.devices import new_key, proof

    key = new_key("EdDSA")
    database = tmp_path / "floor.sqlite3"
    monkeypatch.setenv("BENCH_DEVICE_JWK", json.dumps(dict(key.public.jwk)))
    monkeypatch.setenv("BENCH_FLOOR_DATABASE", str(database))
    reused = {"DPoP": proof(key, "GET", "http://testserver/v1/me")}
    transport = httpx.ASGITransport(app=apps.ed25519_stored_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        statuses = [(await client.get("/v1/me", headers=reused)).status_code for _ in range(3)]
        assert statuses == [200] * 3
        with sqlite3.connect(database) as conn:
            assert conn.execute("SELECT count(*) FROM dpop_replay").fetchone() == (3,)
            conn.execute("UPDATE sessions SET revoked_at = 1")
        assert (await client.get("/v1/me", headers=reused)).status_code == 401


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
        floor = results["protected"]["ed25519_stored"]
        assert floor["requests"] > 0 and floor["non_2xx"] == 0
    # A busy server may refuse some requests with 503: counted, not a harness failure.
    assert results["logins"]["sqlite"]["completed"] > 0
    assert len(results["logins"]["sqlite"]["turns_logins_per_second"]) == 2
    assert [run["users"] for run in results["growth"]["sqlite"]["runs"]] == [0, 1000]
    # The growth turns give each of a server's two workers an equal share of the connections.
    assert [run["uneven_turns"] for run in results["growth"]["sqlite"]["runs"]] == [0, 0]
    assert len(results["memory"]["workers"]) == 2
    fields = set(report.Row.__dataclass_fields__)
    for row in results["rows"]:
        assert set(row) == fields
        assert row["value"] is None or isinstance(row["value"], int | float)
        assert row["met"] in (True, False, None)
    if results.get("chart"):
        assert (ROOT / results["chart"]).exists()


def test_the_results_page_the_readme_links_is_kept_with_its_chart_and_json() -> None:
    """The page `make bench` generates, the chart it shows and the JSON both come from are in
    the repository (bench/results is ignored but for the files named in .gitignore)."""
    assert "(bench/RESULTS.md)" in (ROOT / "README.md").read_text()
    page = ROOT / "bench" / "RESULTS.md"
    shown = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", page.read_text())
    assert shown
    for chart in shown:
        chart_path = (page.parent / chart).resolve().relative_to(ROOT)
        for path in (chart_path, chart_path.with_suffix(".json"), page.relative_to(ROOT)):
            assert (ROOT / path).is_file(), path
            ignored = subprocess.run(
                ["git", "check-ignore", "-q", str(path)], cwd=ROOT, check=False
            ).returncode
            assert ignored != 0, f"{path} is ignored by git, so a clone would not have it"
