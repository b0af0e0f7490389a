"""The administration's store on both backends: users, their live sessions and the outbox, as
`splitlink users|sessions|outbox` read and change them (docs/design.md §4)."""

from __future__ import annotations

import pytest
from support.backends import execute, query

from server.storage.accounts import AccountStore, EndedSession, MailState, Window
from server.storage.database import Database

pytestmark = pytest.mark.anyio

# At 100, with an idle timeout of 50: live means not revoked, expires after 100, used after 50.
WINDOW = Window(now=100, idle_timeout=50)


def _user(url: str, user_id: str, address: str, *, created_at: int = 1) -> None:
    execute(
        url,
        "INSERT INTO users (id, email_canonical, email_address, created_at) VALUES (?, ?, ?, ?)",
        user_id,
        address.lower(),
        address,
        created_at,
    )


def _attempt(url: str, attempt_id: str, address: str) -> None:
    execute(
        url,
        "INSERT INTO login_attempts (id, email_canonical, email_address, dpop_jkt, key_alg, "
        "device_half_hash, email_half_hash, signup_allowed, created_at, expires_at, consumed_at) "
        "VALUES (?, ?, ?, 'jkt', 'ES256', 'd', 'e', 1, 1, 9, 2)",
        attempt_id,
        address.lower(),
        address,
    )


def _session(
    url: str,
    session_id: str,
    user_id: str,
    *,
    created_at: int = 1,
    last_used_at: int = 90,
    expires_at: int = 200,
    revoked_at: int | None = None,
) -> None:
    _attempt(url, f"a-{session_id}", f"{session_id}@attempts.example")
    execute(
        url,
        "INSERT INTO sessions (id, user_id, attempt_id, device_name, dpop_jkt, key_alg, "
        "auth_time, created_at, last_used_at, expires_at, revoked_at) "
        "VALUES (?, ?, ?, 'phone', 'jkt', 'ES256', 1, ?, ?, ?, ?)",
        session_id,
        user_id,
        f"a-{session_id}",
        created_at,
        last_used_at,
        expires_at,
        revoked_at,
    )
    execute(
        url,
        "INSERT INTO refresh_tokens (token_hash, session_id, created_at) VALUES (?, ?, 1)",
        f"h-{session_id}",
        session_id,
    )


def _mail(
    url: str,
    outbox_id: str,
    *,
    status: str = "queued",
    recipient: str = "x@example.com",
    attempt_id: str | None = None,
    created_at: int = 1,
    sealed: str | None = "sealed",
    lease_until: int | None = None,
) -> None:
    execute(
        url,
        "INSERT INTO outbox (id, kind, attempt_id, recipient, message_id, sealed_message, status, "
        "tries, not_before, lease_until, created_at) VALUES (?, 'login', ?, ?, ?, ?, ?, 1, 500, "
        "?, ?)",
        outbox_id,
        attempt_id,
        recipient,
        f"<{outbox_id}@example>",
        sealed,
        status,
        lease_until,
        created_at,
    )


async def test_a_user_is_found_by_id_or_canonical_address_with_its_live_sessions_counted(
    database: Database, database_url: str
) -> None:
    _user(database_url, "u1", "Ann@example.com")
    _session(database_url, "live", "u1")
    _session(database_url, "revoked", "u1", revoked_at=50)
    _session(database_url, "idle", "u1", last_used_at=50)
    _session(database_url, "expired", "u1", expires_at=100)
    store = AccountStore(database)
    by_id = await store.user_by_id(user_id="u1", window=WINDOW)
    by_address = await store.user_by_address(email_canonical="ann@example.com", window=WINDOW)
    assert by_id == by_address
    assert by_id is not None
    assert (by_id.email_address, by_id.disabled_at, by_id.live_sessions) == (
        "Ann@example.com",
        None,
        1,
    )


async def test_an_unknown_user_is_none(database: Database) -> None:
    store = AccountStore(database)
    assert await store.user_by_id(user_id="nobody", window=WINDOW) is None
    assert await store.user_by_address(email_canonical="no@example.com", window=WINDOW) is None


async def test_users_are_listed_oldest_first_up_to_the_limit(
    database: Database, database_url: str
) -> None:
    _user(database_url, "u2", "b@example.com", created_at=2)
    _user(database_url, "u1", "a@example.com", created_at=1)
    _user(database_url, "u3", "c@example.com", created_at=3)
    listed = await AccountStore(database).users(window=WINDOW, limit=2)
    assert [user.id for user in listed] == ["u1", "u2"]


async def test_disabling_a_user_ends_its_live_sessions_and_tokens_at_once_and_only_once(
    database: Database, database_url: str
) -> None:
    _user(database_url, "u1", "a@example.com")
    _session(database_url, "s1", "u1")
    _session(database_url, "old", "u1", revoked_at=50)
    store = AccountStore(database)
    ended = await store.disable_user(user_id="u1", reason="user_disabled", window=WINDOW)
    again = await store.disable_user(user_id="u1", reason="user_disabled", window=WINDOW)
    assert [(s.id, s.user_id) for s in ended or []] == [("s1", "u1")]
    assert again is None
    assert query(database_url, "SELECT disabled_at FROM users") == [(100,)]
    assert query(
        database_url, "SELECT revoked_at, revoked_reason FROM sessions WHERE id = 's1'"
    ) == [(100, "user_disabled")]
    assert query(database_url, "SELECT revoked_at FROM refresh_tokens WHERE session_id = 's1'") == [
        (100,)
    ]


async def test_disabling_an_unknown_user_changes_nothing(database: Database) -> None:
    store = AccountStore(database)
    assert await store.disable_user(user_id="nobody", reason="user_disabled", window=WINDOW) is None


async def test_enabling_a_disabled_user_leaves_its_ended_sessions_ended(
    database: Database, database_url: str
) -> None:
    _user(database_url, "u1", "a@example.com")
    _session(database_url, "s1", "u1")
    store = AccountStore(database)
    await store.disable_user(user_id="u1", reason="user_disabled", window=WINDOW)
    assert await store.enable_user(user_id="u1", reason="user_disabled", now=200) == []
    assert await store.enable_user(user_id="u1", reason="user_disabled", now=201) is None
    assert query(database_url, "SELECT disabled_at FROM users") == [(None,)]
    assert query(database_url, "SELECT revoked_reason FROM sessions") == [("user_disabled",)]
    assert query(database_url, "SELECT revoked_at FROM sessions") == [(100,)]


async def test_enabling_a_user_ends_a_session_that_a_racing_completion_left_open(
    database: Database, database_url: str
) -> None:
    _user(database_url, "u1", "a@example.com")
    store = AccountStore(database)
    await store.disable_user(user_id="u1", reason="user_disabled", window=WINDOW)
    _session(database_url, "s1", "u1")  # opened after the disable ended the live ones
    ended = await store.enable_user(user_id="u1", reason="user_disabled", now=200)
    assert ended == [EndedSession(id="s1", user_id="u1")]
    assert query(database_url, "SELECT revoked_at, revoked_reason FROM sessions") == [
        (200, "user_disabled")
    ]
    assert query(database_url, "SELECT revoked_at FROM refresh_tokens") == [(200,)]


async def test_deleting_a_user_erases_what_names_it_and_keeps_its_audit_rows_without_address(
    database: Database, database_url: str
) -> None:
    _user(database_url, "u1", "a@example.com")
    _user(database_url, "u2", "b@example.com")
    _session(database_url, "s1", "u1")
    _session(database_url, "s2", "u2")
    _attempt(database_url, "pending", "A@example.com")
    _mail(database_url, "m1", recipient="a@example.com")
    _mail(database_url, "m2", recipient="A@example.com", attempt_id="pending")
    _mail(database_url, "m3", recipient="b@example.com")
    execute(
        database_url,
        "INSERT INTO outbox_tries (outbox_id, try_number, tried_at, outcome) "
        "VALUES ('m1', 1, 5, 'failed')",
    )
    for user_id, details in (("u1", "{}"), (None, '{"attempt_id":"pending"}'), ("u2", "{}")):
        execute(
            database_url,
            "INSERT INTO audit_events (at, event, user_id, client_address, details) "
            "VALUES (1, 'e', ?, '203.0.113.7', ?)",
            user_id,
            details,
        )
    store = AccountStore(database)
    user = await store.user_by_id(user_id="u1", window=WINDOW)
    assert user is not None
    erased = await store.delete_user(user=user)
    assert dict(erased.deleted) == {
        "outbox_tries": 1,
        "outbox": 2,
        "refresh_tokens": 1,
        "sessions": 1,
        "login_attempts": 1,
        "users": 1,
    }
    assert [table for table, _ in erased.deleted][-1] == "users"
    assert erased.audit_rows_cleared == 2
    assert query(database_url, "SELECT id FROM users") == [("u2",)]
    assert query(database_url, "SELECT id FROM outbox") == [("m3",)]
    assert query(database_url, "SELECT COUNT(*) FROM audit_events") == [(3,)]
    assert query(
        database_url, "SELECT user_id FROM audit_events WHERE client_address IS NOT NULL"
    ) == [("u2",)]


async def test_live_sessions_are_listed_newest_first_for_one_user_or_for_all(
    database: Database, database_url: str
) -> None:
    _user(database_url, "u1", "a@example.com")
    _user(database_url, "u2", "b@example.com")
    _session(database_url, "s1", "u1", created_at=1)
    _session(database_url, "s2", "u1", created_at=2)
    _session(database_url, "s3", "u2", created_at=3)
    _session(database_url, "gone", "u2", created_at=4, revoked_at=5)
    store = AccountStore(database)
    every = await store.live_sessions(user_id=None, window=WINDOW, limit=10)
    mine = await store.live_sessions(user_id="u1", window=WINDOW, limit=1)
    assert [s.id for s in every] == ["s3", "s2", "s1"]
    assert [(s.id, s.email_address, s.device_name) for s in mine] == [
        ("s2", "a@example.com", "phone")
    ]


async def test_revoking_ends_one_live_session_or_every_live_session_of_a_user(
    database: Database, database_url: str
) -> None:
    _user(database_url, "u1", "a@example.com")
    for session_id in ("s1", "s2", "s3"):
        _session(database_url, session_id, "u1")
    store = AccountStore(database)
    one = await store.revoke_live_sessions(
        session_id="s1", user_id=None, reason="revoked_by_admin", window=WINDOW
    )
    rest = await store.revoke_live_sessions(
        session_id=None, user_id="u1", reason="revoked_by_admin", window=WINDOW
    )
    none = await store.revoke_live_sessions(
        session_id="s1", user_id=None, reason="revoked_by_admin", window=WINDOW
    )
    assert [s.id for s in one] == ["s1"]
    assert sorted(s.id for s in rest) == ["s2", "s3"]
    assert none == []
    assert query(database_url, "SELECT COUNT(*) FROM refresh_tokens WHERE revoked_at = 100") == [
        (3,)
    ]


async def test_the_mail_overview_counts_each_status_and_lists_its_latest_first(
    database: Database, database_url: str
) -> None:
    _mail(database_url, "q1", created_at=1)
    _mail(database_url, "q2", created_at=2)
    _mail(database_url, "q3", created_at=3)
    _mail(database_url, "s1", status="sent")
    overview = await AccountStore(database).mail_overview(statuses=("queued", "expired"), limit=2)
    assert dict(overview.counts) == {"queued": 3, "sent": 1}
    assert [m.id for m in overview.latest["queued"]] == ["q3", "q2"]
    assert overview.latest["expired"] == ()
    assert overview.latest["queued"][0].not_before == 500


async def test_the_tries_of_a_message_are_listed_in_order(
    database: Database, database_url: str
) -> None:
    for number, outcome in ((2, "sent"), (1, "failed")):
        execute(
            database_url,
            "INSERT INTO outbox_tries (outbox_id, try_number, tried_at, outcome, detail) "
            "VALUES ('m1', ?, ?, ?, NULL)",
            number,
            number * 10,
            outcome,
        )
    tries = await AccountStore(database).mail_tries(outbox_id="m1")
    assert [(t.try_number, t.tried_at, t.outcome, t.detail) for t in tries] == [
        (1, 10, "failed", None),
        (2, 20, "sent", None),
    ]
    assert await AccountStore(database).mail_tries(outbox_id="other") == []


async def test_only_a_waiting_message_that_kept_its_order_and_no_live_lease_is_made_due(
    database: Database, database_url: str
) -> None:
    _mail(database_url, "abandoned", status="abandoned")
    _mail(database_url, "sent", status="sent")
    _mail(database_url, "dropped", status="abandoned", sealed=None)
    _mail(database_url, "leased", lease_until=1000)
    store = AccountStore(database)
    made_due = {
        outbox_id: await store.make_mail_due(outbox_id=outbox_id, now=100)
        for outbox_id in ("abandoned", "sent", "dropped", "leased", "unknown")
    }
    assert made_due == {
        "abandoned": True,
        "sent": False,
        "dropped": False,
        "leased": False,
        "unknown": False,
    }
    assert query(
        database_url, "SELECT status, not_before, lease_until FROM outbox WHERE id = 'abandoned'"
    ) == [("queued", 100, None)]


async def test_the_state_of_a_message_says_its_status_and_whether_its_order_is_kept(
    database: Database, database_url: str
) -> None:
    _mail(database_url, "kept", status="abandoned")
    _mail(database_url, "dropped", status="abandoned", sealed=None)
    store = AccountStore(database)
    assert await store.mail_state(outbox_id="kept") == MailState(status="abandoned", has_order=True)
    assert await store.mail_state(outbox_id="dropped") == MailState(
        status="abandoned", has_order=False
    )
    assert await store.mail_state(outbox_id="unknown") is None
