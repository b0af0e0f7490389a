"""Login attempts and the sessions they open (server/login.py's `LoginStore`).

The two backends redeem an attempt differently (docs/design.md §11.3): on SQLite one write
transaction holds the replay entry, the read and the consume, since a statement is a call there,
not a round trip, and the transaction holds the write lock from its start. On PostgreSQL two
statements, each atomic on its own, take the place of a transaction of six round trips: the entry
with the read, then the guarded consume with everything it commits with.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

from protocol.dpop import VerifiedDPoPProof
from server.storage.database import (
    MISSING_REFERENCES,
    Database,
    Row,
    Statement,
    is_missing_reference,
)
from server.storage.login_records import (
    Account,
    AccountAtStart,
    AccountExists,
    FinishedAttempt,
    NewAttempt,
    NewSession,
    StartCounts,
    StoredAttempt,
)
from server.storage.outbox import queue_row
from server.storage.rate_limit_records import Turn, Window
from server.storage.ratelimit import counts_in_turn
from server.storage.records import SealedMail
from server.storage.refresh import refresh_token_row
from server.storage.replay import DatabaseReplayStore
from server.storage.sessions import LIVE, live_window

# The attempt and the account of its address, if there is one yet (SPEC.md §6.2 step 7.1).
_ATTEMPT = (
    "SELECT a.dpop_jkt, a.device_half_hash, a.email_half_hash, a.expires_at, a.consumed_at, "
    "a.failed_count, a.signup_allowed, a.email_canonical, a.email_address, a.device_name, "
    "a.key_alg, u.id AS account_id, u.email_address AS account_address, "
    "u.disabled_at AS account_disabled_at FROM login_attempts a "
    "LEFT JOIN users u ON u.email_canonical = a.email_canonical WHERE a.id = :id"
)
# What stopped a consume that found no row (SPEC.md §6.2 step 7.6).
_FINISHED = (
    "SELECT a.consumed_at, a.failed_count, u.disabled_at AS account_disabled_at "
    "FROM login_attempts a LEFT JOIN users u ON u.email_canonical = a.email_canonical "
    "WHERE a.id = :id"
)
# The account of a canonical address, if there is one.
_ACCOUNT = "SELECT id, email_address, disabled_at FROM users WHERE email_canonical = :canonical"
# The same, and whether a key holds a live session of that account.
_ACCOUNT_AND_KEY = (
    "SELECT u.id, u.email_address, u.disabled_at, EXISTS (SELECT 1 FROM sessions s "  # noqa: S608 - constants
    f"WHERE s.user_id = u.id AND s.dpop_jkt = :jkt AND {LIVE}) AS key_holds_session "
    "FROM users u WHERE u.email_canonical = :canonical"
)
_NEW_ATTEMPT = (
    "INSERT INTO login_attempts (id, email_canonical, email_address, device_name, "
    "dpop_jkt, key_alg, device_half_hash, email_half_hash, signup_allowed, "
    "created_at, expires_at) VALUES (:id, :canonical, :address, :device_name, :jkt, "
    ":alg, :device_hash, :email_hash, :signup_allowed, :now, :expires_at)"
)
_FAILURE = (
    "UPDATE login_attempts SET failed_count = failed_count + 1 WHERE id = :id "
    "RETURNING failed_count"
)
# Concurrent first logins for one address make one user (threats.md D2): the later insert does
# nothing, and its session, naming the id that was not inserted, fails the statement.
_NEW_ACCOUNT = (
    "INSERT INTO users (id, email_canonical, email_address, created_at) "
    "VALUES (:id, :canonical, :address, :now) "
    "ON CONFLICT (email_canonical) DO NOTHING"
)
_NEW_SESSION = (
    "INSERT INTO sessions (id, user_id, attempt_id, device_name, dpop_jkt, key_alg, "
    "auth_time, created_at, last_used_at, expires_at) VALUES (:id, :user_id, "
    ":attempt_id, :device_name, :jkt, :alg, :now, :now, :now, :expires_at)"
)
# Single use rests on this one conditional statement (docs/design.md §1). An account disabled
# since the read is refused here too (SPEC.md §6.2 step 7.6).
_CONSUME = (
    "UPDATE login_attempts SET consumed_at = :now WHERE id = :id AND consumed_at IS NULL "
    "AND expires_at > :now AND failed_count < :max AND NOT EXISTS (SELECT 1 FROM users "
    "WHERE email_canonical = :canonical AND disabled_at IS NOT NULL) RETURNING id"
)
# A session's reference to its user: what a concurrent first login leaves unmet.
_SESSION_USER = "sessions_user_id_fkey"

_RunGuarded = Callable[[Statement, Sequence[Statement]], Awaitable[list[Row]]]


class Redemption:
    """An attempt being redeemed: as read with the completion's replay entry, and its consume.
    Whatever the outcome, the entry commits (SPEC.md §4.4)."""

    def __init__(
        self, *, db: Database, attempt: StoredAttempt | None, run_guarded: _RunGuarded
    ) -> None:
        self._db = db
        self.attempt = attempt
        self._run_guarded = run_guarded

    async def consume(self, session: NewSession, *, max_failures: int) -> bool | AccountExists:
        """The consume and, only if it finds the attempt still completable, everything
        `session` holds, as one atomic unit (docs/design.md §1). False if it found the attempt
        consumed, expired, locked or its account disabled meanwhile; AccountExists if a
        concurrent first login created the account since the read, and nothing took effect."""
        writes = _session_writes(session)
        consume = (
            _CONSUME,
            {
                "id": session.attempt_id,
                "now": session.created_at,
                "max": max_failures,
                "canonical": session.email_canonical,
            },
        )
        try:
            return bool(await self._run_guarded(consume, writes))
        except MISSING_REFERENCES as exc:
            if not session.new_account or not is_missing_reference(exc, constraint=_SESSION_USER):
                raise
            # PostgreSQL only: this account was not inserted, so the session named no user.
            rows = await self._db.statement(_ACCOUNT, {"canonical": session.email_canonical})
            if not rows:  # pragma: no cover - the failed reference was to this very row
                raise RuntimeError(
                    "the account that a concurrent login created is not there"
                ) from exc
            return AccountExists(_account(rows[0], id_="id", address="email_address"))


class DatabaseLoginStore:
    def __init__(self, db: Database, *, replay: DatabaseReplayStore) -> None:
        self._db = db
        self._replay = replay

    async def count_start(
        self,
        *,
        turns: Sequence[Turn],
        window: Window,
        email_canonical: str,
        jkt: str,
        now: int,
        idle_timeout: int,
    ) -> StartCounts:
        """The start's counts in turn, and the account read with them: one round trip on
        PostgreSQL."""
        beside = (
            _ACCOUNT_AND_KEY,
            {
                "canonical": email_canonical,
                "jkt": jkt,
                **live_window(now, idle_timeout=idle_timeout),
            },
        )
        hits, rows = await counts_in_turn(self._db, turns=turns, window=window, beside=beside)
        if not rows:
            return StartCounts(hits=hits, account=None)
        row = rows[0]
        return StartCounts(
            hits=hits,
            account=AccountAtStart(
                account=_account(row, id_="id", address="email_address"),
                disabled=row["disabled_at"] is not None,
                key_holds_session=bool(row["key_holds_session"]),
            ),
        )

    async def record_attempt(
        self,
        *,
        proof: VerifiedDPoPProof,
        attempt: NewAttempt,
        mail: SealedMail | None,
        now: int,
    ) -> None:
        """The proof's replay entry, the attempt and its mail, if any, as one atomic unit,
        durably: one statement on PostgreSQL. A replay raises InvalidDPoPProof and writes
        nothing."""
        row = (
            _NEW_ATTEMPT,
            {
                "id": attempt.id,
                "canonical": attempt.email_canonical,
                "address": attempt.recipient,
                "device_name": attempt.device_name,
                "jkt": attempt.jkt,
                "alg": attempt.key_alg,
                "device_hash": attempt.device_half_hash,
                "email_hash": attempt.email_half_hash,
                "signup_allowed": 1 if attempt.signup_allowed else 0,
                "now": attempt.created_at,
                "expires_at": attempt.expires_at,
            },
        )
        writes = [row] if mail is None else [row, queue_row(mail, now=now)]
        await self._replay.record_with(proof, now=now, writes=writes)

    @asynccontextmanager
    async def redemption(
        self, *, proof: VerifiedDPoPProof, attempt_id: str, now: int
    ) -> AsyncIterator[Redemption]:
        """The proof's replay entry with the read of the attempt; a replay raises
        InvalidDPoPProof before anything else is done. The entry commits however the block
        ends but by an exception, which on SQLite undoes it with the rest."""
        read = (_ATTEMPT, {"id": attempt_id})
        if self._db.dialect == "sqlite":
            async with self._db.transaction() as conn:
                rows = await self._replay.record_in(conn, proof, now=now, read=read)
                yield Redemption(
                    db=self._db,
                    attempt=_stored_attempt(attempt_id, rows),
                    run_guarded=conn.run_guarded,
                )
            return
        # The comparisons between the two statements read only what never changes once an
        # attempt exists; the consume checks the rest again.
        rows = await self._replay.record_with(proof, now=now, writes=(), read=read)
        yield Redemption(
            db=self._db, attempt=_stored_attempt(attempt_id, rows), run_guarded=self._db.run_guarded
        )

    async def count_failure(self, *, attempt_id: str) -> int | None:
        """One atomic increment of the attempt's failures, in a statement of its own, so
        concurrent failures all count and none conflicts with another (threats.md C6): the
        count this one made, or None if there is no such attempt."""
        rows = await self._db.statement(_FAILURE, {"id": attempt_id})
        return int(rows[0]["failed_count"]) if rows else None

    async def finished(self, *, attempt_id: str) -> FinishedAttempt | None:
        """The attempt's state as now committed, or None if it is no longer there."""
        rows = await self._db.statement(_FINISHED, {"id": attempt_id})
        if not rows:
            return None
        row = rows[0]
        return FinishedAttempt(
            consumed=row["consumed_at"] is not None,
            failed_count=int(row["failed_count"]),
            account_disabled=row["account_disabled_at"] is not None,
        )


def _account(row: Row, *, id_: str, address: str) -> Account:
    return Account(id=str(row[id_]), email_address=str(row[address]))


def _stored_attempt(attempt_id: str, rows: list[Row]) -> StoredAttempt | None:
    if not rows:
        return None
    row = rows[0]
    account = None
    if row["account_id"] is not None:
        account = _account(row, id_="account_id", address="account_address")
    return StoredAttempt(
        id=attempt_id,
        jkt=row["dpop_jkt"],
        device_half_hash=row["device_half_hash"],
        email_half_hash=row["email_half_hash"],
        expires_at=int(row["expires_at"]),
        consumed=row["consumed_at"] is not None,
        failed_count=int(row["failed_count"]),
        signup_allowed=bool(row["signup_allowed"]),
        email_canonical=row["email_canonical"],
        recipient=row["email_address"],
        device_name=row["device_name"],
        key_alg=row["key_alg"],
        account=account,
        account_disabled=row["account_disabled_at"] is not None,
    )


def _session_writes(session: NewSession) -> list[Statement]:
    """The inserts a consume commits with: the account at its first login, the session, its
    new-device notice (NIST SP 800-63B-4 §4.6: no session without its notice, and no notice
    for a session that never was) and its refresh token."""
    now = session.created_at
    writes: list[Statement] = []
    if session.new_account:
        writes.append(
            (
                _NEW_ACCOUNT,
                {
                    "id": session.account.id,
                    "canonical": session.email_canonical,
                    "address": session.account.email_address,
                    "now": now,
                },
            )
        )
    writes.append(
        (
            _NEW_SESSION,
            {
                "id": session.id,
                "user_id": session.account.id,
                "attempt_id": session.attempt_id,
                "device_name": session.device_name,
                "jkt": session.jkt,
                "alg": session.key_alg,
                "now": now,
                "expires_at": session.expires_at,
            },
        )
    )
    writes.append(queue_row(session.notice, now=now))
    writes.append(
        refresh_token_row(token_hash=session.refresh_token_hash, session_id=session.id, now=now)
    )
    return writes
