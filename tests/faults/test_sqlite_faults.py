"""SQLite under lock contention and with a full disk: 503 with Retry-After, never 500, nothing
half-written (docs/design.md §5; threats.md I7, I13)."""

from __future__ import annotations

import resource
import signal
import sqlite3
from pathlib import Path

import httpx
import pytest
from support.harness import running_server
from support.invariants import violations
from support.processes import running_server_process
from support.races import HttpDevice

from server.storage.migrate import migrate

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_write_lock_held_elsewhere_gives_503_then_recovers(tmp_path: Path) -> None:
    async with running_server(tmp_path, sqlite_busy_timeout=0.2) as server:
        device = server.device()
        path = server.database_url.removeprefix("sqlite:///")
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            blocked = await server.start(device, "a@example.com")
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert blocked.status_code == 503
        assert blocked.json()["error"] == "temporarily_unavailable"
        assert int(blocked.headers["retry-after"]) >= 1
        assert server.query("SELECT COUNT(*) FROM login_attempts") == [(0,)]
        tokens = await server.login(device, "a@example.com")
        assert tokens["token_type"] == "DPoP"
        assert violations(server.database_url) == []


UNLIMITED = {
    "SPLITLINK_DEV_MAILBOX_CONSOLE": "false",
    "SPLITLINK_RATE_LIMIT_START_PER_IP": "100000",
}


def _limit_file_size(limit: int) -> None:
    # Writes past the limit fail with EFBIG instead of killing the process.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.mark.slow
def test_full_disk_gives_503_and_leaves_nothing_half_written(tmp_path: Path) -> None:
    """The server's files may not grow past a limit, as on a full disk. Starts and logins
    eventually fail with 503; every answer is 202, 200 or 503; the invariants hold; and once
    there is room again the same database serves logins."""
    statuses: list[int] = []
    with running_server_process(
        tmp_path,
        workers=1,
        extra_env=UNLIMITED,
        preexec=lambda: _limit_file_size(400_000),
    ) as server:
        device = HttpDevice.new(server)
        for i in range(400):
            response = httpx.post(
                server.url + "/v1/login/start",
                json={"email": f"user{i}@example.com"},
                headers={"DPoP": device.proof("POST", "/v1/login/start")},
            )
            statuses.append(response.status_code)
            if response.status_code == 503:
                assert response.headers["retry-after"]
                if statuses.count(503) >= 5:
                    break
        database_url = server.database_url
    assert set(statuses) <= {202, 503}, statuses
    assert 503 in statuses
    assert violations(database_url) == []
    with running_server_process(tmp_path, workers=1, extra_env=UNLIMITED) as server:
        tokens = HttpDevice.new(server).login("after@example.com", mail_count=1)
        assert tokens["token_type"] == "DPoP"
    assert violations(database_url) == []


def test_busy_sqlite_defaults_are_safe(tmp_path: Path) -> None:
    """WAL is on, and the per-connection defaults keep commits durable (synchronous FULL)."""
    db = tmp_path / "x.db"
    migrate(f"sqlite:///{db}")
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert conn.execute("PRAGMA synchronous").fetchone() == (2,)
