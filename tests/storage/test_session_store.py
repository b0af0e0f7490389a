"""`DatabaseSessionStore` on both backends: the store of `server.sessions.SessionService`."""

from __future__ import annotations

import pytest
from support.backends import query
from support.session_rows import JKT, add_refresh_token, add_session, add_user, proof

from protocol.errors import InvalidDPoPProof
from server.storage.database import Database
from server.storage.replay import DatabaseReplayStore
from server.storage.sessions import (
    CurrentRefreshToken,
    DatabaseSessionStore,
    LiveSession,
    SessionSummary,
)

pytestmark = pytest.mark.anyio

IDLE = 100
NOW = 500


def _store(db: Database) -> DatabaseSessionStore:
    return DatabaseSessionStore(db, replay=DatabaseReplayStore(db, retention=60), idle_timeout=IDLE)


def _replay_entries(url: str) -> int:
    return int(query(url, "SELECT COUNT(*) FROM dpop_replay")[0][0])


def _revoked(url: str, table: str, key: str, value: str) -> list[tuple[object, ...]]:
    return query(url, f"SELECT revoked_at FROM {table} WHERE {key} = ?", value)  # noqa: S608


async def test_a_live_session_is_read_with_its_user_and_the_proof_recorded(
    database: Database, database_url: str
) -> None:
    add_user(database_url, "u1")
    add_session(
        database_url, "s1", user_id="u1", created_at=3, last_used_at=450, device_name="phone"
    )
    found = await _store(database).read_live_recording("s1", proof=proof(), now=NOW)
    assert found == LiveSession(
        id="s1",
        user_id="u1",
        email_address="u1@example.com",
        device_name="phone",
        key_alg="ES256",
        dpop_jkt=JKT,
        created_at=3,
        last_used_at=450,
        expires_at=1000,
        auth_time=1,
    )
    assert _replay_entries(database_url) == 1


async def test_a_replayed_proof_is_refused_with_the_read_whatever_the_session(
    database: Database, database_url: str
) -> None:
    add_user(database_url, "u1")
    add_session(database_url, "s1", user_id="u1", last_used_at=450)
    store, used = _store(database), proof()
    assert await store.read_live_recording("s1", proof=used, now=NOW) is not None
    with pytest.raises(InvalidDPoPProof):
        await store.read_live_recording("s1", proof=used, now=NOW)
    with pytest.raises(InvalidDPoPProof):
        await store.read_live_recording("unknown", proof=used, now=NOW)
    assert _replay_entries(database_url) == 1


async def test_a_proof_is_recorded_even_when_the_session_has_ended(
    database: Database, database_url: str
) -> None:
    add_user(database_url, "u1")
    add_session(database_url, "s1", user_id="u1", last_used_at=450, revoked_at=9)
    assert await _store(database).read_live_recording("s1", proof=proof(), now=NOW) is None
    assert _replay_entries(database_url) == 1


@pytest.mark.parametrize(
    ("revoked_at", "expires_at", "last_used_at"),
    [(9, 1000, 450), (None, NOW, 450), (None, 1000, NOW - IDLE)],
    ids=["revoked", "past_its_end", "idle"],
)
async def test_an_ended_or_idle_session_is_not_returned(
    database: Database,
    database_url: str,
    revoked_at: int | None,
    expires_at: int,
    last_used_at: int,
) -> None:
    add_user(database_url, "u1")
    add_session(
        database_url,
        "s1",
        user_id="u1",
        revoked_at=revoked_at,
        expires_at=expires_at,
        last_used_at=last_used_at,
    )
    store = _store(database)
    assert await store.read_live("s1", now=NOW) is None
    assert await store.read_live_recording("s1", proof=proof(), now=NOW) is None
    assert await store.list_live("u1", now=NOW) == []


async def test_a_disabled_users_session_is_not_returned(
    database: Database, database_url: str
) -> None:
    add_user(database_url, "u1", disabled_at=7)
    add_session(database_url, "s1", user_id="u1", last_used_at=450)
    store = _store(database)
    assert await store.read_live("s1", now=NOW) is None
    assert await store.read_live_recording("s1", proof=proof(), now=NOW) is None


async def test_a_read_without_a_proof_records_nothing_and_is_no_use(
    database: Database, database_url: str
) -> None:
    add_user(database_url, "u1")
    add_session(database_url, "s1", user_id="u1", last_used_at=450)
    found = await _store(database).read_live("s1", now=NOW)
    assert found is not None and found.id == "s1" and found.last_used_at == 450
    assert _replay_entries(database_url) == 0
    assert query(database_url, "SELECT last_used_at FROM sessions") == [(450,)]


async def test_noting_a_use_moves_the_last_use_forward_never_back(
    database: Database, database_url: str
) -> None:
    add_user(database_url, "u1")
    add_session(database_url, "s1", user_id="u1", last_used_at=450)
    store = _store(database)
    await store.note_use("s1", now=NOW)
    await store.note_use("s1", now=NOW - 10)
    assert query(database_url, "SELECT last_used_at FROM sessions") == [(NOW,)]


async def test_the_listing_holds_the_users_live_sessions_and_no_other(
    database: Database, database_url: str
) -> None:
    add_user(database_url, "u1")
    add_user(database_url, "u2")
    add_session(database_url, "b", user_id="u1", created_at=5, last_used_at=450, device_name="x")
    add_session(database_url, "a", user_id="u1", created_at=5, last_used_at=460)
    add_session(database_url, "ended", user_id="u1", last_used_at=450, revoked_at=9)
    add_session(database_url, "idle", user_id="u1", last_used_at=NOW - IDLE)
    add_session(database_url, "other", user_id="u2", last_used_at=450)
    listed = await _store(database).list_live("u1", now=NOW)
    assert sorted(listed, key=lambda session: session.id) == [
        SessionSummary(
            id="a",
            device_name=None,
            key_alg="ES256",
            created_at=5,
            last_used_at=460,
            expires_at=1000,
        ),
        SessionSummary(
            id="b",
            device_name="x",
            key_alg="ES256",
            created_at=5,
            last_used_at=450,
            expires_at=1000,
        ),
    ]


async def test_ending_one_session_needs_it_live_and_the_users_and_ends_its_tokens(
    database: Database, database_url: str
) -> None:
    add_user(database_url, "u1")
    add_user(database_url, "u2")
    add_session(database_url, "s1", user_id="u1", last_used_at=450)
    add_session(database_url, "idle", user_id="u1", last_used_at=NOW - IDLE)
    add_refresh_token(database_url, "h1", session_id="s1")
    add_refresh_token(database_url, "h2", session_id="s1", rotated_at=3, child_hash="h1")
    store = _store(database)
    assert not await store.end_live("s1", user_id="u2", reason="ended_by_user", now=NOW)
    assert not await store.end_live("idle", user_id="u1", reason="ended_by_user", now=NOW)
    assert not await store.end_live("unknown", user_id="u1", reason="ended_by_user", now=NOW)
    assert _revoked(database_url, "sessions", "id", "s1") == [(None,)]
    assert await store.end_live("s1", user_id="u1", reason="ended_by_user", now=NOW)
    assert not await store.end_live("s1", user_id="u1", reason="ended_by_user", now=NOW)
    assert query(
        database_url, "SELECT revoked_at, revoked_reason FROM sessions WHERE id = 's1'"
    ) == [(NOW, "ended_by_user")]
    assert query(database_url, "SELECT revoked_at FROM refresh_tokens") == [(NOW,), (NOW,)]
    assert _revoked(database_url, "sessions", "id", "idle") == [(None,)]


async def test_ending_all_ends_every_unrevoked_session_of_the_user_only(
    database: Database, database_url: str
) -> None:
    add_user(database_url, "u1")
    add_user(database_url, "u2")
    add_session(database_url, "s1", user_id="u1", last_used_at=450)
    add_session(database_url, "idle", user_id="u1", last_used_at=NOW - IDLE)
    add_session(database_url, "ended", user_id="u1", last_used_at=450, revoked_at=9)
    add_session(database_url, "other", user_id="u2", last_used_at=450)
    add_refresh_token(database_url, "h1", session_id="s1")
    add_refresh_token(database_url, "h2", session_id="other")
    count = await _store(database).end_all("u1", reason="logout_all", now=NOW)
    assert count == 2
    assert query(
        database_url, "SELECT id, revoked_at, revoked_reason FROM sessions ORDER BY id"
    ) == [
        ("ended", 9, None),
        ("idle", NOW, "logout_all"),
        ("other", None, None),
        ("s1", NOW, "logout_all"),
    ]
    assert _revoked(database_url, "refresh_tokens", "token_hash", "h1") == [(NOW,)]
    assert _revoked(database_url, "refresh_tokens", "token_hash", "h2") == [(None,)]


async def test_ending_a_session_by_its_id_ends_it_once_whoever_holds_it(
    database: Database, database_url: str
) -> None:
    add_user(database_url, "u1")
    add_session(database_url, "s1", user_id="u1", last_used_at=NOW - IDLE)
    add_refresh_token(database_url, "h1", session_id="s1")
    store = _store(database)
    assert await store.end("s1", reason="revocation", now=NOW)
    assert not await store.end("s1", reason="revocation", now=NOW + 1)
    assert not await store.end("unknown", reason="revocation", now=NOW)
    assert query(database_url, "SELECT revoked_at, revoked_reason FROM sessions") == [
        (NOW, "revocation")
    ]
    assert _revoked(database_url, "refresh_tokens", "token_hash", "h1") == [(NOW,)]


async def test_any_refresh_token_a_session_had_names_the_session(
    database: Database, database_url: str
) -> None:
    add_user(database_url, "u1")
    add_session(database_url, "s1", user_id="u1", revoked_at=9)
    add_refresh_token(database_url, "h1", session_id="s1", revoked_at=9)
    add_refresh_token(database_url, "h2", session_id="s1", rotated_at=3, child_hash="h1")
    store = _store(database)
    assert await store.session_of_refresh_token("h1") == "s1"
    assert await store.session_of_refresh_token("h2") == "s1"
    assert await store.session_of_refresh_token("unknown") is None


async def test_only_a_current_refresh_token_of_a_live_session_is_current(
    database: Database, database_url: str
) -> None:
    add_user(database_url, "u1")
    add_user(database_url, "u2", disabled_at=7)
    add_session(database_url, "s1", user_id="u1", last_used_at=450)
    add_session(database_url, "idle", user_id="u1", last_used_at=NOW - IDLE)
    add_session(database_url, "disabled", user_id="u2", last_used_at=450)
    add_refresh_token(database_url, "current", session_id="s1", created_at=40)
    add_refresh_token(database_url, "rotated", session_id="s1", rotated_at=40, child_hash="current")
    add_refresh_token(database_url, "revoked", session_id="s1", revoked_at=40)
    add_refresh_token(database_url, "of_idle", session_id="idle")
    add_refresh_token(database_url, "of_disabled", session_id="disabled")
    store = _store(database)
    assert await store.current_refresh_token("current", now=NOW) == CurrentRefreshToken(
        session_id="s1", user_id="u1", dpop_jkt=JKT, session_expires_at=1000, created_at=40
    )
    for token_hash in ("rotated", "revoked", "of_idle", "of_disabled", "unknown"):
        assert await store.current_refresh_token(token_hash, now=NOW) is None
