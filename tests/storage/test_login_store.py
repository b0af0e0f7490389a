"""The login store (server/storage/logins.py) on both backends: what server/login.py's
`LoginStore` requires of it."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import pytest
from support.backends import execute, query

from protocol.dpop import VerifiedDPoPProof
from protocol.errors import InvalidDPoPProof
from protocol.keys import SigningKey
from server.storage.database import Database
from server.storage.login_records import (
    Account,
    AccountExists,
    FinishedAttempt,
    NewAttempt,
    NewSession,
    StoredAttempt,
)
from server.storage.logins import DatabaseLoginStore
from server.storage.rate_limit_records import Turn, Window
from server.storage.records import SealedMail
from server.storage.replay import DatabaseReplayStore

pytestmark = pytest.mark.anyio

NOW = 10_000
_WINDOW = Window(start=9_900, expires_at=10_800)
_IDLE = 600
_KEY = SigningKey.generate("EdDSA", random_bytes=os.urandom)


def _proof() -> VerifiedDPoPProof:
    return VerifiedDPoPProof(
        key=_KEY.public,
        jkt=_KEY.public.thumbprint,
        jti=os.urandom(16).hex(),
        iat=NOW,
        htm="POST",
        htu="https://login.example/oauth2/token",
        nonce=None,
        replay_key=os.urandom(32).hex(),
    )


def _store(database: Database) -> DatabaseLoginStore:
    return DatabaseLoginStore(database, replay=DatabaseReplayStore(database, retention=300))


def _attempt(attempt_id: str = "a1", **changes: Any) -> NewAttempt:
    attempt = NewAttempt(
        id=attempt_id,
        email_canonical="a@example.com",
        recipient="A@example.com",
        device_name="phone",
        jkt=_KEY.public.thumbprint,
        key_alg="EdDSA",
        device_half_hash="device-hash",
        email_half_hash="email-hash",
        signup_allowed=True,
        created_at=NOW,
        expires_at=NOW + 600,
    )
    return replace(attempt, **changes)


def _mail(mail_id: str, *, kind: str, attempt_id: str | None, recipient: str) -> SealedMail:
    return SealedMail(
        id=mail_id,
        kind=kind,
        attempt_id=attempt_id,
        recipient=recipient,
        message_id=f"<{mail_id}@login.example>",
        sealed="sealed",
    )


def _session(
    attempt: StoredAttempt, *, account: Account, new_account: bool, session_id: str = "s1"
) -> NewSession:
    return NewSession(
        id=session_id,
        attempt_id=attempt.id,
        account=account,
        new_account=new_account,
        email_canonical=attempt.email_canonical,
        device_name=attempt.device_name,
        jkt=attempt.jkt,
        key_alg=attempt.key_alg,
        created_at=NOW,
        expires_at=NOW + 86_400,
        notice=_mail(
            f"n-{session_id}", kind="new_device", attempt_id=None, recipient=account.email_address
        ),
        refresh_token_hash=f"h-{session_id}",
    )


def _add_user(url: str, *, user_id: str = "u1", disabled_at: int | None = None) -> None:
    execute(
        url,
        "INSERT INTO users (id, email_canonical, email_address, created_at, disabled_at) "
        "VALUES (?, 'a@example.com', 'A@Example.com', 1, ?)",
        user_id,
        disabled_at,
    )


async def _record(store: DatabaseLoginStore, attempt: NewAttempt | None = None) -> NewAttempt:
    attempt = attempt or _attempt()
    mail = _mail("m1", kind="login_link", attempt_id=attempt.id, recipient=attempt.recipient)
    await store.record_attempt(proof=_proof(), attempt=attempt, mail=mail, now=NOW)
    return attempt


def _counted(url: str, table: str) -> int:
    return int(query(url, f"SELECT count(*) FROM {table}")[0][0])  # noqa: S608 - test tables


# --- The start --------------------------------------------------------------------------------


async def test_a_start_counts_its_turns_and_reads_no_account_for_an_address_without_one(
    database: Database,
) -> None:
    counted = await _store(database).count_start(
        turns=(Turn(bucket="ip", limit=1), Turn(bucket="email", limit=5)),
        window=_WINDOW,
        email_canonical="a@example.com",
        jkt="k1",
        now=NOW,
        idle_timeout=_IDLE,
    )
    assert (counted.hits, counted.account) == ((1, 1), None)


async def test_a_start_stops_counting_after_the_first_bucket_over_its_limit(
    database: Database,
) -> None:
    store = _store(database)
    seen = []
    for _ in range(2):
        counted = await store.count_start(
            turns=(Turn(bucket="ip", limit=1), Turn(bucket="email", limit=5)),
            window=_WINDOW,
            email_canonical="a@example.com",
            jkt="k1",
            now=NOW,
            idle_timeout=_IDLE,
        )
        seen.append(counted.hits)
    assert seen == [(1, 1), (2, None)]


@pytest.mark.parametrize(
    ("session", "holds"),
    [
        ("live", True),
        ("revoked", False),
        ("past its end", False),
        ("idle too long", False),
        ("of another key", False),
    ],
)
async def test_a_start_reads_the_account_and_whether_its_key_holds_a_live_session_of_it(
    database: Database, database_url: str, session: str, holds: bool
) -> None:
    _add_user(database_url)
    execute(
        database_url,
        "INSERT INTO login_attempts (id, email_canonical, email_address, dpop_jkt, key_alg, "
        "device_half_hash, email_half_hash, signup_allowed, created_at, expires_at) "
        "VALUES ('a0', 'a@example.com', 'A@Example.com', 'k1', 'EdDSA', 'd', 'e', 1, 1, 9)",
    )
    revoked_at = NOW - 1 if session == "revoked" else None
    expires_at = NOW if session == "past its end" else NOW + 100
    last_used_at = NOW - _IDLE if session == "idle too long" else NOW - 1
    jkt = "k2" if session == "of another key" else "k1"
    execute(
        database_url,
        "INSERT INTO sessions (id, user_id, attempt_id, device_name, dpop_jkt, key_alg, "
        "auth_time, created_at, last_used_at, expires_at, revoked_at) "
        "VALUES ('s0', 'u1', 'a0', NULL, ?, 'EdDSA', 1, 1, ?, ?, ?)",
        jkt,
        last_used_at,
        expires_at,
        revoked_at,
    )
    counted = await _store(database).count_start(
        turns=(Turn(bucket="ip", limit=5),),
        window=_WINDOW,
        email_canonical="a@example.com",
        jkt="k1",
        now=NOW,
        idle_timeout=_IDLE,
    )
    assert counted.account is not None
    assert counted.account.account == Account(id="u1", email_address="A@Example.com")
    assert (counted.account.disabled, counted.account.key_holds_session) == (False, holds)


async def test_a_start_reads_whether_the_account_is_disabled(
    database: Database, database_url: str
) -> None:
    _add_user(database_url, disabled_at=5)
    counted = await _store(database).count_start(
        turns=(Turn(bucket="ip", limit=5),),
        window=_WINDOW,
        email_canonical="a@example.com",
        jkt="k1",
        now=NOW,
        idle_timeout=_IDLE,
    )
    assert counted.account is not None
    assert (counted.account.disabled, counted.account.key_holds_session) == (True, False)


async def test_an_attempt_is_recorded_with_its_replay_entry_and_its_mail(
    database: Database, database_url: str
) -> None:
    await _record(_store(database))
    assert query(
        database_url,
        "SELECT id, email_canonical, email_address, device_name, dpop_jkt, key_alg, "
        "device_half_hash, email_half_hash, signup_allowed, created_at, expires_at, "
        "consumed_at, failed_count FROM login_attempts",
    ) == [
        (
            "a1",
            "a@example.com",
            "A@example.com",
            "phone",
            _KEY.public.thumbprint,
            "EdDSA",
            "device-hash",
            "email-hash",
            1,
            NOW,
            NOW + 600,
            None,
            0,
        )
    ]
    assert query(
        database_url, "SELECT id, kind, attempt_id, recipient, status, created_at FROM outbox"
    ) == [("m1", "login_link", "a1", "A@example.com", "queued", NOW)]
    assert _counted(database_url, "dpop_replay") == 1


async def test_an_attempt_without_mail_queues_nothing(
    database: Database, database_url: str
) -> None:
    attempt = _attempt(signup_allowed=False)
    await _store(database).record_attempt(proof=_proof(), attempt=attempt, mail=None, now=NOW)
    assert query(database_url, "SELECT id, signup_allowed FROM login_attempts") == [("a1", 0)]
    assert _counted(database_url, "outbox") == 0


async def test_a_replayed_proof_at_a_start_is_refused_and_writes_nothing(
    database: Database, database_url: str
) -> None:
    store = _store(database)
    proof = _proof()
    await store.record_attempt(proof=proof, attempt=_attempt("a1"), mail=None, now=NOW)
    mail = _mail("m2", kind="login_link", attempt_id="a2", recipient="A@example.com")
    with pytest.raises(InvalidDPoPProof):
        await store.record_attempt(proof=proof, attempt=_attempt("a2"), mail=mail, now=NOW)
    assert query(database_url, "SELECT id FROM login_attempts") == [("a1",)]
    assert _counted(database_url, "outbox") == 0
    assert _counted(database_url, "dpop_replay") == 1


# --- The completion ---------------------------------------------------------------------------


async def test_a_redemption_reads_the_attempt_with_the_account_of_its_address(
    database: Database, database_url: str
) -> None:
    store = _store(database)
    await _record(store)
    _add_user(database_url, disabled_at=7)
    async with store.redemption(proof=_proof(), attempt_id="a1", now=NOW) as redemption:
        attempt = redemption.attempt
    assert attempt == StoredAttempt(
        id="a1",
        jkt=_KEY.public.thumbprint,
        device_half_hash="device-hash",
        email_half_hash="email-hash",
        expires_at=NOW + 600,
        consumed=False,
        failed_count=0,
        signup_allowed=True,
        email_canonical="a@example.com",
        recipient="A@example.com",
        device_name="phone",
        key_alg="EdDSA",
        account=Account(id="u1", email_address="A@Example.com"),
        account_disabled=True,
    )


async def test_a_redemption_of_an_unknown_attempt_reads_nothing_and_keeps_its_replay_entry(
    database: Database, database_url: str
) -> None:
    async with _store(database).redemption(proof=_proof(), attempt_id="a9", now=NOW) as found:
        assert found.attempt is None
    assert _counted(database_url, "dpop_replay") == 1


async def test_a_replayed_proof_at_a_redemption_is_refused_and_writes_nothing(
    database: Database, database_url: str
) -> None:
    store = _store(database)
    await _record(store)
    proof = _proof()
    async with store.redemption(proof=proof, attempt_id="a1", now=NOW):
        pass
    with pytest.raises(InvalidDPoPProof):
        async with store.redemption(proof=proof, attempt_id="a1", now=NOW):
            pytest.fail("a replayed proof reads no attempt")
    assert _counted(database_url, "dpop_replay") == 2  # the start's and the first completion's


async def test_a_consume_commits_the_new_account_session_notice_and_refresh_token_together(
    database: Database, database_url: str
) -> None:
    store = _store(database)
    await _record(store)
    async with store.redemption(proof=_proof(), attempt_id="a1", now=NOW) as redemption:
        assert redemption.attempt is not None
        account = Account(id="u-new", email_address=redemption.attempt.recipient)
        session = _session(redemption.attempt, account=account, new_account=True)
        assert await redemption.consume(session, max_failures=5) is True
    assert query(database_url, "SELECT consumed_at FROM login_attempts") == [(NOW,)]
    assert query(database_url, "SELECT id, email_canonical, email_address FROM users") == [
        ("u-new", "a@example.com", "A@example.com")
    ]
    assert query(
        database_url,
        "SELECT id, user_id, attempt_id, device_name, dpop_jkt, key_alg, auth_time, "
        "created_at, last_used_at, expires_at FROM sessions",
    ) == [
        ("s1", "u-new", "a1", "phone", _KEY.public.thumbprint, "EdDSA", NOW, NOW, NOW, NOW + 86_400)
    ]
    assert query(database_url, "SELECT id, kind, recipient FROM outbox ORDER BY id") == [
        ("m1", "login_link", "A@example.com"),
        ("n-s1", "new_device", "A@example.com"),
    ]
    assert query(database_url, "SELECT token_hash, session_id FROM refresh_tokens") == [
        ("h-s1", "s1")
    ]


async def test_a_consume_with_an_existing_account_opens_its_session(
    database: Database, database_url: str
) -> None:
    store = _store(database)
    await _record(store)
    _add_user(database_url)
    async with store.redemption(proof=_proof(), attempt_id="a1", now=NOW) as redemption:
        attempt = redemption.attempt
        assert attempt is not None and attempt.account is not None
        session = _session(attempt, account=attempt.account, new_account=False)
        assert await redemption.consume(session, max_failures=5) is True
    assert query(database_url, "SELECT id FROM users") == [("u1",)]
    assert query(database_url, "SELECT user_id FROM sessions") == [("u1",)]
    assert query(database_url, "SELECT recipient FROM outbox WHERE kind = 'new_device'") == [
        ("A@Example.com",)
    ]


async def test_a_consume_of_a_consumed_attempt_returns_false_and_writes_nothing(
    database: Database, database_url: str
) -> None:
    store = _store(database)
    await _record(store)
    account = Account(id="u-new", email_address="A@example.com")
    for session_id, expected in (("s1", True), ("s2", False)):
        async with store.redemption(proof=_proof(), attempt_id="a1", now=NOW) as redemption:
            assert redemption.attempt is not None
            session = _session(
                redemption.attempt,
                account=account,
                new_account=session_id == "s1",
                session_id=session_id,
            )
            assert await redemption.consume(session, max_failures=5) is expected
    assert query(database_url, "SELECT id FROM sessions") == [("s1",)]
    assert query(database_url, "SELECT session_id FROM refresh_tokens") == [("s1",)]
    assert _counted(database_url, "outbox") == 2  # the login link and one notice


@pytest.mark.parametrize("state", ["locked", "expired", "disabled"])
async def test_a_consume_of_a_locked_or_expired_attempt_or_a_disabled_account_writes_nothing(
    database: Database, database_url: str, state: str
) -> None:
    store = _store(database)
    await _record(store)
    _add_user(database_url)
    async with store.redemption(proof=_proof(), attempt_id="a1", now=NOW) as redemption:
        attempt = redemption.attempt
        assert attempt is not None and attempt.account is not None
    # What the consume checks again: a state reached after the read.
    change = {
        "locked": "UPDATE login_attempts SET failed_count = ?",
        "expired": "UPDATE login_attempts SET expires_at = ?",
        "disabled": "UPDATE users SET disabled_at = ?",
    }[state]
    execute(database_url, change, {"locked": 5, "expired": NOW, "disabled": 1}[state])
    async with store.redemption(proof=_proof(), attempt_id="a1", now=NOW) as redemption:
        session = _session(attempt, account=attempt.account, new_account=False)
        assert await redemption.consume(session, max_failures=5) is False
    assert query(database_url, "SELECT consumed_at FROM login_attempts") == [(None,)]
    assert _counted(database_url, "sessions") == 0
    assert _counted(database_url, "refresh_tokens") == 0
    assert _counted(database_url, "outbox") == 1  # the login link only


# On SQLite the redemption holds the write lock from its read: no login can come between.
@pytest.mark.parametrize("backend", ["postgresql"])
async def test_on_postgres_a_consume_after_a_concurrent_first_login_reports_its_account(
    database: Database, database_url: str
) -> None:
    store = _store(database)
    await _record(store)
    async with store.redemption(proof=_proof(), attempt_id="a1", now=NOW) as redemption:
        attempt = redemption.attempt
        assert attempt is not None and attempt.account is None
        _add_user(database_url, user_id="u-other")
        new = Account(id="u-new", email_address=attempt.recipient)
        consumed = await redemption.consume(
            _session(attempt, account=new, new_account=True), max_failures=5
        )
        assert consumed == AccountExists(Account(id="u-other", email_address="A@Example.com"))
        assert query(database_url, "SELECT consumed_at FROM login_attempts") == [(None,)]
        assert _counted(database_url, "sessions") == 0
        assert _counted(database_url, "outbox") == 1
        again = _session(attempt, account=consumed.account, new_account=False, session_id="s2")
        assert await redemption.consume(again, max_failures=5) is True
    assert query(database_url, "SELECT id, user_id FROM sessions") == [("s2", "u-other")]
    assert query(database_url, "SELECT recipient FROM outbox WHERE kind = 'new_device'") == [
        ("A@Example.com",)
    ]


async def test_a_failure_count_returns_each_increment_and_nothing_for_an_unknown_attempt(
    database: Database, database_url: str
) -> None:
    store = _store(database)
    await _record(store)
    seen = [await store.count_failure(attempt_id="a1") for _ in range(3)]
    assert seen == [1, 2, 3]
    assert await store.count_failure(attempt_id="a9") is None
    assert query(database_url, "SELECT failed_count FROM login_attempts") == [(3,)]


async def test_what_stopped_a_consume_is_read_as_committed(
    database: Database, database_url: str
) -> None:
    store = _store(database)
    await _record(store)
    assert await store.finished(attempt_id="a9") is None
    assert await store.finished(attempt_id="a1") == FinishedAttempt(
        consumed=False, failed_count=0, account_disabled=False
    )
    _add_user(database_url, disabled_at=3)
    execute(database_url, "UPDATE login_attempts SET consumed_at = ?, failed_count = 2", NOW)
    assert await store.finished(attempt_id="a1") == FinishedAttempt(
        consumed=True, failed_count=2, account_disabled=True
    )
