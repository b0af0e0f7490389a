"""How a login reaches the database on PostgreSQL: a start in two round trips and a completion in
three, each statement atomic on its own, and no transaction around them (SPEC.md §6.1 step 5,
§6.2 step 7, §8.1; attacks.md D2)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import backends
from support.harness import Harness, running_server

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _count_uses(server: Harness, monkeypatch: pytest.MonkeyPatch, name: str) -> list[str]:
    """Every use of the database's context manager `name` (a transaction, an autocommit
    connection) from now on."""
    db = server.app.state.services.db
    used: list[str] = []
    original = getattr(db, name)

    @asynccontextmanager
    async def counted(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        used.append(name)
        async with original(*args, **kwargs) as conn:
            yield conn

    monkeypatch.setattr(db, name, counted)
    return used


@dataclass(frozen=True)
class _RoundTrips:
    transactions: list[str]
    durable_statements: list[str]
    single_statements: list[str]

    def seen(self) -> tuple[int, int, list[str]]:
        """Transactions, durable statements, and the first three words of each single one."""
        heads = [" ".join(query.split()[:3]) for query in self.single_statements]
        return len(self.transactions), len(self.durable_statements), heads


def _watch_round_trips(server: Harness, monkeypatch: pytest.MonkeyPatch) -> _RoundTrips:
    """From now on: the transactions opened, the autocommit connections taken (one durable
    statement each) and the statements sent on the single-statement pool."""
    return _RoundTrips(
        _count_uses(server, monkeypatch, "transaction"),
        _count_uses(server, monkeypatch, "autocommit"),
        server.record_single_statements(monkeypatch),
    )


async def test_on_postgres_a_start_is_two_round_trips_without_a_transaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both rate limits with the read of the account on the single-statement path, then one
    # durable statement: the replay entry, the attempt and its mail order.
    async with running_server(tmp_path, backend="postgresql") as server:
        await server.login(server.device(), "known@example.com")
        for address in ("known@example.com", "new@example.com"):
            sent = _watch_round_trips(server, monkeypatch)
            response = await server.start(server.device(), address)
            assert response.status_code == 202, response.text
            monkeypatch.undo()
            assert sent.seen() == (0, 1, ["WITH counted_1 AS"]), sent


async def test_on_postgres_a_completion_is_three_round_trips_without_a_transaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The per-IP limit on the single-statement path, then two durable statements: the replay
    # entry with the read of the attempt, and the consume with everything it commits with.
    async with running_server(tmp_path, backend="postgresql") as server:
        device = server.device()
        started, email_half = await server.start_and_read_link(device, "a@example.com")
        sent = _watch_round_trips(server, monkeypatch)
        response = await server.complete_started(device, started, email_half)
        assert response.status_code == 200, response.text
    assert sent.seen() == (0, 2, ["INSERT INTO rate_limits"]), sent


async def test_on_postgres_a_first_login_joins_the_account_created_after_its_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # attacks.md D2. Another first login for the same address commits its account between this
    # completion's read (no account yet) and its consume. This completion's own account insert
    # then does nothing, and its session, which names the id that was not inserted, fails the
    # whole statement: nothing is consumed. It is run again with the account that now exists.
    async with running_server(tmp_path, backend="postgresql") as server:
        device = server.device()
        started, email_half = await server.start_and_read_link(device, "Twin@Example.com")
        replay = server.app.state.services.login._replay
        record_with = replay.record_with

        async def record_then_other_login_commits(*args: Any, **kwargs: Any) -> Any:
            read = await record_with(*args, **kwargs)
            backends.execute(
                server.database_url,
                "INSERT INTO users (id, email_canonical, email_address, created_at) "
                "VALUES (?, ?, ?, ?)",
                "the-other-logins-account",
                "twin@example.com",
                "twin@example.COM",
                server.clock.now(),
            )
            return read

        monkeypatch.setattr(replay, "record_with", record_then_other_login_commits)
        response = await server.complete_started(device, started, email_half)
        assert response.status_code == 200, response.text
        assert server.query("SELECT id, email_address FROM users") == [
            ("the-other-logins-account", "twin@example.COM")
        ]
        assert server.query("SELECT user_id FROM sessions") == [("the-other-logins-account",)]
        assert server.query(
            "SELECT consumed_at IS NOT NULL FROM login_attempts WHERE id = ?",
            started["attempt_id"],
        ) == [(True,)]
        # The new-device notice goes to the address stored for the account.
        assert server.query("SELECT recipient FROM outbox WHERE kind = 'new_device'") == [
            ("twin@example.COM",)
        ]
