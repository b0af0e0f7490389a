"""Outbox rows (docs/design.md §12): a message is queued with the event it reports, claimed with
a lease by a dispatcher, and what became of each claim is recorded with its try.
`DatabaseOutboxStore` is the store of `server.mail.outbox.OutboxStore`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from server.storage.database import Database, Row, Statement
from server.storage.records import SealedMail

_QUEUE = (
    "INSERT INTO outbox (id, kind, attempt_id, recipient, message_id, sealed_message, status, "
    "tries, not_before, created_at) VALUES (:id, :kind, :attempt_id, :recipient, "
    ":message_id, :sealed, 'queued', 0, :now, :now)"
)


def queue_row(mail: SealedMail, *, now: int) -> Statement:
    """The insert that queues `mail`, for the transaction of the event it reports."""
    return (
        _QUEUE,
        {
            "id": mail.id,
            "kind": mail.kind,
            "attempt_id": mail.attempt_id,
            "recipient": mail.recipient,
            "message_id": mail.message_id,
            "sealed": mail.sealed,
            "now": now,
        },
    )


# One statement claims up to :limit rows: the oldest due rows, and within one second other mail
# before login links, so a notice queued by one completion never follows the link of a login
# started later in that second. SQLite runs one writer at a time, so the statement is atomic as
# it stands; on PostgreSQL, FOR UPDATE SKIP LOCKED makes concurrent dispatchers take different
# rows instead of queueing behind one lock, and checks the conditions again on the rows it
# locks. Both walk the index (status, not_before, kind DESC, id) in its order
# ('new_device' and 'no_account' sort after 'login_link') and stop after the rows they can take
# (revision 0004). Whether each message is still worth sending, read by the claim itself: mail
# without an attempt always is; a login link only while its attempt can still be completed.
_LIVE = (
    "CASE WHEN outbox.attempt_id IS NULL OR EXISTS (SELECT 1 FROM login_attempts a "
    "WHERE a.id = outbox.attempt_id AND a.consumed_at IS NULL AND a.expires_at > :now "
    "AND a.failed_count < :max_failed) THEN 1 ELSE 0 END AS live"
)


_DUE = (
    "SELECT id FROM outbox WHERE status = 'queued' AND not_before <= :now "
    "AND (lease_until IS NULL OR lease_until < :now) "
    "ORDER BY not_before, kind DESC, id LIMIT :limit"
)


def _claim_statement(claimed: str) -> str:
    """The claim of one dialect: `claimed` selects the rows that `_DUE` finds free. Built from
    constants only."""
    return (
        f"UPDATE outbox SET lease_until = :lease, tries = tries + 1 WHERE {claimed} "  # noqa: S608
        "RETURNING id, kind, attempt_id, recipient, sealed_message, tries, not_before, "
        f"{_LIVE}"
    )


_FREE = "AND status = 'queued' AND (lease_until IS NULL OR lease_until < :now)"

_CLAIM = {
    # SQLite evaluates a subquery that does not refer to the outer row once, and runs one writer
    # at a time: the rows are still free when the update reaches them.
    "sqlite": _claim_statement(f"id IN ({_DUE}) {_FREE}"),
    # Here `id IN (...)` may become a join that runs the subquery again, taking more rows than
    # its LIMIT; an ARRAY(...) subquery runs once. FOR UPDATE checks the subquery's conditions
    # again on the newest version of each row it locks, and the lock holds until the statement
    # ends, so every row it returns is free. The update repeats none of them: with a condition
    # on `status` beside the key, the planner, its row counts outdated by a busy queue, read the
    # rows through the claim index and walked every queued entry to find the few claimed.
    "postgresql": _claim_statement(f"id = ANY(ARRAY({_DUE} FOR UPDATE SKIP LOCKED))"),
}


# A delivery record: the row's new state, and the try. Built from constants only. A retry
# changes the row only while this claim still holds it: after a lease expiry another dispatcher
# may have claimed it again (its claim has a higher `tries`). Any other outcome leaves a row that
# another dispatcher already finished as it is, except that a delivery is always recorded as one.
_RETRY = (
    "UPDATE outbox SET lease_until = NULL, not_before = :next, last_error = :detail "
    "WHERE id = :id AND status = 'queued' AND tries = :tries"
)
_FINISH = (
    "UPDATE outbox SET status = :status, sealed_message = NULL, lease_until = NULL, "
    "sent_at = CASE WHEN :status = 'sent' THEN :now ELSE sent_at END, "
    "last_error = COALESCE(:detail, last_error) "
    "WHERE id = :id AND (status = 'queued' OR :status = 'sent')"
)
# A message given up after its last try keeps its sealed order: the mail service was failing,
# and once it is repaired an operator may make the message due again (`splitlink outbox retry`).
_GIVE_UP = (
    "UPDATE outbox SET status = 'abandoned', lease_until = NULL, last_error = :detail "
    "WHERE id = :id AND status = 'queued'"
)
_TRY = (
    "INSERT INTO outbox_tries (outbox_id, try_number, tried_at, outcome, detail) "
    "VALUES (:id, :tries, :now, :outcome, :detail)"
)
# `outbox_tries.detail` and `outbox.last_error` keep the start of an error only.
_DETAIL_CHARS = 200

DeliveryOutcome = Literal["sent", "retry", "abandoned", "expired"]


@dataclass(frozen=True, slots=True)
class ClaimedMail:
    """A due message leased to one dispatcher, as its claim left it."""

    id: str
    kind: str
    recipient: str
    # The order, sealed; only an altered row has none.
    sealed_message: str | None = field(repr=False)
    # This claim's try: the row's `tries` after the claim.
    tries: int
    # Worth sending: no attempt, or an attempt that can still be completed.
    live: bool
    claimed_at: int


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """What became of one claim: the row's new state and its try, written together."""

    claim: ClaimedMail
    outcome: DeliveryOutcome
    at: int
    detail: str | None
    # A retry: when the message is due again.
    next_try: int | None = None
    # Given up after the last try: the sealed order stays, for `splitlink outbox retry`.
    keeps_order: bool = False


class DatabaseOutboxStore:
    def __init__(self, db: Database, *, max_failed_completions: int) -> None:
        self._db = db
        self._claim = _CLAIM[db.dialect]
        self._max_failed = max_failed_completions

    async def claim(self, *, now: int, lease_until: int, limit: int) -> list[ClaimedMail]:
        # One statement on the database's fast path (on SQLite without an fsync of its own): if
        # a crash loses it, the lease simply is not there and the rows are claimed again, which
        # at-least-once allows.
        rows = await self._db.statement(
            self._claim,
            {"now": now, "lease": lease_until, "max_failed": self._max_failed, "limit": limit},
        )
        # The order of RETURNING is not the order of the subquery: the index's order again.
        rows.sort(key=lambda row: row["id"])
        rows.sort(key=lambda row: row["kind"], reverse=True)  # stable, so ids stay in order
        rows.sort(key=lambda row: row["not_before"])
        return [_claimed(row, now) for row in rows]

    async def release(self, claims: Sequence[ClaimedMail], *, now: int, reason: str) -> None:
        await self.record(
            [
                DeliveryRecord(claim=claim, outcome="retry", at=now, detail=reason, next_try=now)
                for claim in claims
            ]
        )

    async def record(self, records: Sequence[DeliveryRecord]) -> None:
        writes: list[Statement] = []
        for record in records:
            values = {
                "id": record.claim.id,
                "tries": record.claim.tries,
                "now": record.at,
                "outcome": record.outcome,
                "status": record.outcome,
                "next": record.next_try,
                "detail": None if record.detail is None else record.detail[:_DETAIL_CHARS],
            }
            update = _RETRY if record.outcome == "retry" else _FINISH
            if record.keeps_order:
                update = _GIVE_UP
            writes += [(update, values), (_TRY, values)]
        if not writes:
            return
        # Not durable (no fsync of its own on SQLite, no wait for the WAL flush on PostgreSQL):
        # if a power failure loses these records, the rows are claimed again when their leases
        # run out and the messages go again, which the at-least-once guarantee allows
        # (docs/design.md §12.2, §5, §7). On PostgreSQL one statement on the single-statement path,
        # instead of a transaction of BEGIN, the setting, the statements and COMMIT.
        await self._db.run_together(writes, durable=False)


def _claimed(row: Row, now: int) -> ClaimedMail:
    return ClaimedMail(
        id=row["id"],
        kind=row["kind"],
        recipient=row["recipient"],
        sealed_message=row["sealed_message"],
        tries=int(row["tries"]),
        live=bool(row["live"]),
        claimed_at=now,
    )
