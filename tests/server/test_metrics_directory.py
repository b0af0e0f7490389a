"""The metrics directory of `splitlink serve` (server/metrics_directory.py): fresh for each
server, removed when it stops, and removed by the next start when its server was killed."""

from __future__ import annotations

import fcntl
import subprocess
import sys
from pathlib import Path

from server.metrics_directory import METRICS_SUBDIRECTORY, metrics_directory


def test_each_server_gets_an_empty_directory_of_its_own_removed_when_it_stops(
    tmp_path: Path,
) -> None:
    with metrics_directory(tmp_path) as first, metrics_directory(tmp_path) as second:
        assert first != second
        assert first.parent == second.parent == tmp_path / METRICS_SUBDIRECTORY
        assert [p.name for p in first.iterdir()] == ["serving.lock"]
        (first / "counter_1.db").write_bytes(b"x")
    assert not first.exists()
    assert not second.exists()


def test_a_killed_servers_directory_is_removed_and_a_running_servers_is_kept(
    tmp_path: Path,
) -> None:
    parent = tmp_path / METRICS_SUBDIRECTORY
    abandoned = parent / "serve-abandoned"
    running = parent / "serve-running"
    for path in (abandoned, running):
        path.mkdir(parents=True)
        (path / "serving.lock").touch()
        (path / "counter_1.db").write_bytes(b"x")
    with (running / "serving.lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with metrics_directory(tmp_path):
            assert not abandoned.exists()
            assert (running / "counter_1.db").exists()


def test_the_serve_command_loads_no_metrics_library_before_it_sets_their_directory() -> None:
    # prometheus-client chooses between memory and the directory when it is first imported: a
    # `splitlink serve` that imported it before setting the directory would count in memory
    # while its scrapes read the directory.
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, server.cli; print('prometheus_client' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert loaded.stdout.strip() == "False"
