"""`DatabaseRefreshStore` on both backends: the store of `server.refresh.RefreshService`."""

from __future__ import annotations

import pytest
from support.backends import query
from support.session_rows import JKT, add_refresh_token, add_session, add_user, proof

from protocol.errors import InvalidDPoPProof
from server.storage.database import MAX_TRANSACTION_ATTEMPTS, Database, TransactionConflict
from server.storage.refresh import ChildToken, DatabaseRefreshStore, PresentedToken
from server.storage.replay import DatabaseReplayStore

pytestmark = pytest.mark.anyio

NOW = 500


class _Observer:
    def __init__(self) -> None:
        self.retries = 0

    def conflict_retried(self) -> None:
        self.retries += 1

    def failed(self, kind: str) -> None:
        return None


def _store(db: Database) -> DatabaseRefreshStore:
    return DatabaseRefreshStore(db, replay=DatabaseReplayStore(db, retention=60))


def _seed(
    url: str,
    *,
    rotated_at: int | None = None,
    child_hash: str | None = None,
    revoked_at: int | None = None,
) -> None:
    add_user(url, "u1")
    add_session(url, "s1", user_id="u1", last_used_at=450)
    add_refresh_token(
        url,
        "parent",
        session_id="s1",
        rotated_at=rotated_at,
        child_hash=child_hash,
        revoked_at=revoked_at,
    )


def _count(url: str, sql: str) -> int:
    return int(query(url, sql)[0][0])


async def test_the_proof_is_recorded_with_the_read_of_the_token_and_its_session(
    database: Database, database_url: str
) -> None:
    _seed(database_url)
    found: list[PresentedToken | None] = []
    async for attempt in _store(database).rotations(token_hash="parent"):
        async with attempt as rotation:
            found.append(await rotation.record_proof_and_read(proof(), now=NOW))
    assert found == [
        PresentedToken(
            session_id="s1",
            user_id="u1",
            dpop_jkt=JKT,
            auth_time=1,
            session_expires_at=1000,
            session_last_used_at=450,
            session_revoked=False,
            user_disabled=False,
            token_revoked=False,
            rotated_at=None,
            child_hash=None,
        )
    ]
    assert _count(database_url, "SELECT COUNT(*) FROM dpop_replay") == 1


async def test_an_unknown_token_reads_as_none_and_its_proof_is_kept(
    database: Database, database_url: str
) -> None:
    async for attempt in _store(database).rotations(token_hash="unknown"):
        async with attempt as rotation:
            assert await rotation.record_proof_and_read(proof(), now=NOW) is None
    assert _count(database_url, "SELECT COUNT(*) FROM dpop_replay") == 1


async def test_a_replayed_proof_is_refused_with_the_read_and_rotates_nothing(
    database: Database, database_url: str
) -> None:
    _seed(database_url)
    store, used = _store(database), proof()
    async for attempt in store.rotations(token_hash="unknown"):
        async with attempt as rotation:
            await rotation.record_proof_and_read(used, now=NOW)
    with pytest.raises(InvalidDPoPProof):
        async for attempt in store.rotations(token_hash="parent"):
            async with attempt as rotation:
                await rotation.record_proof_and_read(used, now=NOW)
                await rotation.claim(child_hash="child", now=NOW)
    assert query(database_url, "SELECT rotated_at FROM refresh_tokens") == [(None,)]


async def test_the_read_tells_an_ended_session_a_disabled_user_and_a_revoked_token(
    database: Database, database_url: str
) -> None:
    add_user(database_url, "u1", disabled_at=7)
    add_session(database_url, "s1", user_id="u1", revoked_at=9)
    add_refresh_token(database_url, "parent", session_id="s1", revoked_at=9)
    async for attempt in _store(database).rotations(token_hash="parent"):
        async with attempt as rotation:
            found = await rotation.record_proof_and_read(proof(), now=NOW)
    assert found is not None
    assert (found.session_revoked, found.user_disabled, found.token_revoked) == (True, True, True)


async def test_a_rotation_claim_is_won_once(database: Database, database_url: str) -> None:
    _seed(database_url)
    store = _store(database)
    claims = []
    for child_hash in ("child", "another"):
        async for attempt in store.rotations(token_hash="parent"):
            async with attempt as rotation:
                claims.append(await rotation.claim(child_hash=child_hash, now=NOW))
                again = await rotation.read_again()
    assert claims == [True, False]
    assert again is not None and (again.rotated_at, again.child_hash) == (NOW, "child")


async def test_a_revoked_token_cannot_be_claimed(database: Database, database_url: str) -> None:
    _seed(database_url, revoked_at=9)
    async for attempt in _store(database).rotations(token_hash="parent"):
        async with attempt as rotation:
            assert not await rotation.claim(child_hash="child", now=NOW)
    assert query(database_url, "SELECT rotated_at, child_hash FROM refresh_tokens") == [
        (None, None)
    ]


async def test_the_child_row_is_stored_and_the_rotation_counts_as_a_use(
    database: Database, database_url: str
) -> None:
    _seed(database_url)
    children: list[ChildToken | None] = []
    async for attempt in _store(database).rotations(token_hash="parent"):
        async with attempt as rotation:
            assert await rotation.claim(child_hash="child", now=NOW)
            await rotation.add_child(child_hash="child", session_id="s1", now=NOW)
            children.append(await rotation.child(child_hash="child"))
            children.append(await rotation.child(child_hash="unknown"))
    assert children == [ChildToken(rotated=False, revoked=False), None]
    assert query(
        database_url,
        "SELECT token_hash, session_id, created_at, rotated_at, child_hash FROM refresh_tokens "
        "ORDER BY created_at",
    ) == [("parent", "s1", 1, NOW, "child"), ("child", "s1", NOW, None, None)]
    assert query(database_url, "SELECT last_used_at FROM sessions") == [(NOW,)]


async def test_reuse_revokes_the_session_and_its_whole_family(
    database: Database, database_url: str
) -> None:
    _seed(database_url, rotated_at=3, child_hash="child")
    add_refresh_token(database_url, "child", session_id="s1", created_at=3)
    async for attempt in _store(database).rotations(token_hash="parent"):
        async with attempt as rotation:
            await rotation.end_session(session_id="s1", reason="refresh_token_reused", now=NOW)
    assert query(database_url, "SELECT revoked_at, revoked_reason FROM sessions") == [
        (NOW, "refresh_token_reused")
    ]
    assert query(database_url, "SELECT revoked_at FROM refresh_tokens") == [(NOW,), (NOW,)]


async def test_a_conflict_rolls_the_attempt_back_and_runs_the_next(database_url: str) -> None:
    _seed(database_url)
    observer = _Observer()
    attempts = 0
    observed = Database(database_url, observer=observer)
    await observed.connect()
    try:
        async for attempt in _store(observed).rotations(token_hash="parent"):
            async with attempt as rotation:
                attempts += 1
                await rotation.record_proof_and_read(proof(), now=NOW)
                await rotation.claim(child_hash=f"child-{attempts}", now=NOW)
                if attempts == 1:
                    raise TransactionConflict()
    finally:
        await observed.disconnect()
    assert (attempts, observer.retries) == (2, 1)
    assert _count(database_url, "SELECT COUNT(*) FROM dpop_replay") == 1
    assert query(database_url, "SELECT child_hash FROM refresh_tokens") == [("child-2",)]


async def test_conflicts_past_the_bound_are_raised(database: Database, database_url: str) -> None:
    _seed(database_url)
    attempts = 0
    with pytest.raises(TransactionConflict):
        async for attempt in _store(database).rotations(token_hash="parent"):
            async with attempt as rotation:
                attempts += 1
                await rotation.claim(child_hash="child", now=NOW)
                raise TransactionConflict()
    assert attempts == MAX_TRANSACTION_ATTEMPTS
    assert query(database_url, "SELECT rotated_at FROM refresh_tokens") == [(None,)]
