"""How a login reaches the database on PostgreSQL: a start in two round trips and a completion in
three, each statement atomic on its own, and no transaction around them (docs/design.md §11.2,
§11.3, §1; threats.md D2)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import backends
from support.harness import Harness, running_server

from protocol.encoding import b64url_encode

pytestmark = pytest.mark.anyio


def _count_uses(server: Harness, monkeypatch: pytest.MonkeyPatch, name: str) -> list[str]:
    """Every use of the database backend's context manager `name` (a transaction, an
    autocommit connection) from now on."""
    db = server.app.state.services.db._backend
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


def _random_id() -> str:
    return b64url_encode(os.urandom(16))


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
    # threats.md D2. Another first login for the same address commits its account between this
    # completion's read (no account yet) and its consume. This completion's own account insert
    # then does nothing, and its session, which names the id that was not inserted, fails the
    # whole statement: nothing is consumed. It is run again with the account that now exists.
    async with running_server(tmp_path, backend="postgresql") as server:
        device = server.device()
        started, email_half = await server.start_and_read_link(device, "Twin@Example.com")
        replay = server.app.state.services.login._store._replay
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


async def test_on_postgres_a_refusal_takes_the_same_round_trips_whether_or_not_the_attempt_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SPEC.md §6.4: no oracle. An unknown id, a wrong half or a wrong key, against a live,
    # consumed, locked or expired attempt, all reach the database the same way: the per-IP
    # limit, the entry with the read, and the failure count (which finds no row for an unknown
    # id). Were the count left out for an unknown id, its answer would come one round trip
    # sooner.
    async with running_server(tmp_path, backend="postgresql") as server:
        owner, thief = server.device(), server.device()
        attempts = []
        for state in ("live", "consumed", "locked", "expired"):
            started, email_half = await server.start_and_read_link(owner, f"{state}@example.com")
            right = {
                "attempt_id": started["attempt_id"],
                "device_half": started["device_half"],
                "email_half": email_half,
            }
            attempts.append((state, right))
            if state == "consumed":
                assert (await server.complete(owner, **right)).status_code == 200
            if state == "locked":
                for _ in range(server.settings.max_failed_completions):
                    wrong = {**right, "email_half": b64url_encode(os.urandom(32))}
                    assert (await server.complete(owner, **wrong)).status_code == 400
        server.clock.advance(server.settings.attempt_lifetime - 1)
        expired_id = attempts[-1][1]["attempt_id"]
        backends.execute(
            server.database_url,
            "UPDATE login_attempts SET expires_at = ? WHERE id = ?",
            server.clock.now(),
            expired_id,
        )
        requests = {"unknown attempt": (owner, {**attempts[0][1], "attempt_id": _random_id()})}
        for state, right in attempts:
            requests[f"{state}, wrong email half"] = (
                owner,
                {**right, "email_half": b64url_encode(os.urandom(32))},
            )
            requests[f"{state}, wrong device half"] = (
                owner,
                {**right, "device_half": b64url_encode(os.urandom(32))},
            )
            requests[f"{state}, wrong key"] = (thief, right)
        seen = {}
        for name, (device, params) in requests.items():
            sent = _watch_round_trips(server, monkeypatch)
            response = await server.complete(device, **params)
            monkeypatch.undo()
            assert response.status_code == 400, name
            seen[name] = sent.seen()
    expected = (0, 1, ["INSERT INTO rate_limits", "UPDATE login_attempts SET"])
    assert seen == dict.fromkeys(requests, expected)


async def test_on_postgres_a_completion_that_loses_its_consume_to_a_lockout_names_locked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Failures that reach the limit commit between this proven completion's read and its
    # consume: the consume finds no row, and the answer names the state that stopped it.
    async with running_server(tmp_path, backend="postgresql") as server:
        device = server.device()
        started, email_half = await server.start_and_read_link(device, "a@example.com")
        replay = server.app.state.services.login._store._replay
        record_with = replay.record_with

        async def record_then_failures_lock_the_attempt(*args: Any, **kwargs: Any) -> Any:
            read = await record_with(*args, **kwargs)
            backends.execute(
                server.database_url,
                "UPDATE login_attempts SET failed_count = ? WHERE id = ?",
                server.settings.max_failed_completions,
                started["attempt_id"],
            )
            return read

        monkeypatch.setattr(replay, "record_with", record_then_failures_lock_the_attempt)
        response = await server.complete_started(device, started, email_half)
        assert response.status_code == 400, response.text
        assert response.json()["attempt_state"] == "locked"
        assert server.query("SELECT COUNT(*) FROM sessions") == [(0,)]


async def test_on_postgres_a_start_for_a_disabled_account_costs_the_same_round_trips(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SPEC.md §6.1: no mail is queued for a disabled account, within the same one statement.
    async with running_server(tmp_path, backend="postgresql") as server:
        await server.login(server.device(), "off@example.com")
        backends.execute(server.database_url, "UPDATE users SET disabled_at = ?", 1)
        sent = _watch_round_trips(server, monkeypatch)
        response = await server.start(server.device(), "off@example.com")
        assert response.status_code == 202, response.text
        monkeypatch.undo()
        assert sent.seen() == (0, 1, ["WITH counted_1 AS"]), sent
