"""PostgreSQL connections killed under load, workers killed mid-request, and two server
processes on one database (SPEC.md §8; threats.md I8, I9, I10, I11)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from support.backends import postgres_database
from support.invariants import violations
from support.load import run_load
from support.processes import ServerProcess, running_server_process
from support.races import HttpDevice

pytestmark = pytest.mark.slow

RELAXED = {
    "SPLITLINK_DEV_MAILBOX_CONSOLE": "false",
    "SPLITLINK_RATE_LIMIT_START_PER_IP": "100000",
    "SPLITLINK_RATE_LIMIT_COMPLETE_PER_IP": "100000",
}


@pytest.fixture
def pg_server(tmp_path: Path) -> Iterator[ServerProcess]:
    with (
        postgres_database() as url,
        running_server_process(tmp_path, workers=2, database_url=url, extra_env=RELAXED) as server,
    ):
        yield server


def _terminate_connections(database_url: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return len(rows)


def _recovers(server: ServerProcess, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            HttpDevice.new(server).login(f"recovered{time.monotonic_ns()}@example.com")
            return True
        except (AssertionError, httpx.TransportError):
            time.sleep(0.2)
    return False


def test_connections_terminated_under_load_give_503_and_the_server_recovers(
    pg_server: ServerProcess,
) -> None:
    stop = threading.Event()
    result, threads = run_load(pg_server, users=4, stop=stop)
    time.sleep(1.5)
    killed = 0
    for _ in range(6):
        killed += _terminate_connections(pg_server.database_url)
        time.sleep(0.4)
    time.sleep(1.0)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert killed > 0
    assert 500 not in result.codes, result.statuses
    assert result.retry_after_missing == 0
    assert result.codes <= {200, 202, 400, 503}, result.statuses
    assert _recovers(pg_server), "the server did not recover without a restart"
    assert violations(pg_server.database_url, secrets=result.secrets) == []


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_workers_killed_mid_request_leave_the_invariants_true(tmp_path: Path, backend: str) -> None:
    with (
        postgres_database() if backend == "postgresql" else _no_database() as url,
        running_server_process(tmp_path, workers=2, database_url=url, extra_env=RELAXED) as server,
    ):
        stop = threading.Event()
        result, threads = run_load(server, users=4, stop=stop)
        time.sleep(1.5)
        for _ in range(4):
            for pid in _worker_pids(server):
                os.kill(pid, signal.SIGKILL)
            time.sleep(1.0)  # the supervisor starts replacements
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        assert 500 not in result.codes, result.statuses
        assert _recovers(server)
        assert violations(server.database_url, secrets=result.secrets) == []


def _worker_pids(server: ServerProcess) -> list[int]:
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
    return [int(pid) for pid in children.read_text().split()]


class _no_database:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def test_two_server_processes_on_one_database_behave_as_one(tmp_path: Path) -> None:
    """A proof replayed on the other process is refused, a rate limit counts across both, and
    a revocation on one is seen at once by the other."""
    env = {
        "SPLITLINK_SECRET_KEY": "two-processes-share-this-root-secret-0123456789",
        "SPLITLINK_DATA_DIR": str(tmp_path / "shared"),
        "SPLITLINK_DEV_MAILBOX_CONSOLE": "false",
        "SPLITLINK_RATE_LIMIT_START_PER_EMAIL": "4",
        # One device and one client below: their own buckets out of the way of the address's.
        "SPLITLINK_RATE_LIMIT_START_PER_EMAIL_KEY": "100",
        "SPLITLINK_RATE_LIMIT_START_PER_EMAIL_CLIENT": "100",
    }
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    public = "http://auth.test"
    with (
        postgres_database() as url,
        running_server_process(
            tmp_path / "a", workers=1, database_url=url, extra_env=env, public_url=public
        ) as first,
        running_server_process(
            tmp_path / "b", workers=1, database_url=url, extra_env=env, public_url=public
        ) as second,
    ):
        device = HttpDevice.new(first)
        body = {"email": "shared@example.com"}
        proof = device.proof("POST", "/v1/login/start")
        accepted = httpx.post(first.url + "/v1/login/start", json=body, headers={"DPoP": proof})
        assert accepted.status_code == 202
        replay = httpx.post(second.url + "/v1/login/start", json=body, headers={"DPoP": proof})
        assert replay.status_code == 400
        assert replay.json()["error"] == "invalid_dpop_proof"
        statuses = [
            httpx.post(
                target.url + "/v1/login/start",
                json=body,
                headers={"DPoP": device.proof("POST", "/v1/login/start")},
            ).status_code
            for target in (second, first, second)
        ]
        # Four starts for the address so far, across both processes (the refused replay
        # counted too): the fifth is over the limit wherever it lands.
        assert statuses == [202, 202, 429]

        tokens = device.login("revoked@example.com")
        me_headers = {
            "Authorization": f"DPoP {tokens['access_token']}",
        }
        assert (
            httpx.get(
                first.url + "/v1/me",
                headers={
                    **me_headers,
                    "DPoP": device.proof("GET", "/v1/me", tokens["access_token"]),
                },
            ).status_code
            == 200
        )
        assert (
            httpx.post(
                second.url + "/oauth2/revoke", data={"token": tokens["refresh_token"]}
            ).status_code
            == 200
        )
        seen = httpx.get(
            first.url + "/v1/me",
            headers={**me_headers, "DPoP": device.proof("GET", "/v1/me", tokens["access_token"])},
        )
        assert seen.status_code == 401
