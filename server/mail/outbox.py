"""The outbox: mail is queued in the same transaction as the attempt (or the session) it belongs
to, and a dispatcher inside each server process delivers it afterwards (SPEC.md §7).

A request queues an order (server/mail/orders.py), not a message: rendering, the QR code above
all, costs CPU that the request need not spend. The order is sealed (AES-256-GCM,
key derived from the root secret) because a login order carries the email half, and secrets never
rest in plain form. The dispatcher renders it just before the hand-off; rendering is
deterministic, so every hand-off of a row carries the same bytes: a duplicate delivery (a crash
after the hand-off, a lease that ran out) repeats the same link, Message-ID and MIME boundaries.
After delivery, or when its attempt can no longer be completed, the sealed order is deleted.

Guarantee: at least once, never for an attempt that can no longer complete when its row is
claimed, and each try is recorded in `outbox_tries`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Literal

from protocol.email_address import parse_email_address
from protocol.encoding import b64url_encode
from protocol.errors import SplitlinkError
from server.clock import Clock, RandomBytes
from server.errors import TemporarilyUnavailable
from server.events import EventSink, SecurityEvent
from server.keyring import Keyring, SealError
from server.mail.compose import MailComposer
from server.mail.orders import MailOrder, OrderError, decode_order, encode_order
from server.mail.transport import (
    MailServiceUnavailable,
    MailTransport,
    PermanentMailError,
    TransientMailError,
)
from server.metrics import OUTBOX_TRIES
from server.storage.database import Database, Statement
from server.storage.records import SealedMail

logger = logging.getLogger("splitlink.outbox")

LEASE_SECONDS = 60
MAX_BACKOFF_SECONDS = 600
# With backoff capped at 10 minutes, 12 tries span about an hour: longer than any attempt lives.
MAX_TRIES = 12
# One hand-off may take this long (wall clock) before it counts as a transient failure: well
# inside the lease, so a slow server rarely causes a second, concurrent delivery.
SEND_DEADLINE_SECONDS = 45.0
_SEAL_CONTEXT = "outbox:"

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


Outcome = Literal["sent", "retry", "abandoned", "expired"]

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


@dataclass(frozen=True)
class QueuedMail:
    id: str
    message_id: str


def new_queued_mail(*, random_bytes: RandomBytes, domain: str) -> QueuedMail:
    outbox_id = b64url_encode(random_bytes(16))
    return QueuedMail(id=outbox_id, message_id=f"<{outbox_id}@{domain}>")


def seal_mail(
    mail: QueuedMail,
    order: MailOrder,
    *,
    attempt_id: str | None,
    keyring: Keyring,
    random_bytes: RandomBytes,
) -> SealedMail:
    """`order` sealed for its outbox row, queued in the transaction of the event it reports."""
    if order.message_id != mail.message_id:
        raise ValueError("the order must carry the Message-ID of its outbox row")
    return SealedMail(
        id=mail.id,
        kind=order.kind,
        attempt_id=attempt_id,
        recipient=order.recipient,
        message_id=mail.message_id,
        sealed=keyring.seal(
            encode_order(order), context=_SEAL_CONTEXT + mail.id, random_bytes=random_bytes
        ),
    )


class OutboxDispatcher:
    def __init__(
        self,
        db: Database,
        keyring: Keyring,
        transport: MailTransport,
        *,
        composer: MailComposer,
        clock: Clock,
        events: EventSink,
        poll_interval: float,
        max_failed_completions: int,
        concurrency: int = 1,
    ) -> None:
        self._db = db
        self._concurrency = concurrency
        self._keyring = keyring
        self._transport = transport
        self._composer = composer
        self._clock = clock
        self._events = events
        self._poll_interval = poll_interval
        self._max_failed = max_failed_completions
        self._stopping = asyncio.Event()

    async def run_forever(self) -> None:
        """Deliver due mail until `stop()`: then the hand-offs under way finish and are
        recorded, and no further row is claimed."""
        while not self._stopping.is_set():
            try:
                await self.dispatch_due()
            except TemporarilyUnavailable:
                logger.warning("outbox: database unavailable; will retry")
            except Exception:
                logger.exception("outbox: unexpected failure; will retry")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._poll_interval)

    def stop(self) -> None:
        self._stopping.set()

    async def dispatch_due(self) -> int:
        """Deliver every message that is due now; returns how many were handled.

        Messages go in batches: one statement claims up to `concurrency` rows, their hand-offs
        run at once (each SMTP hand-off is a connection of its own, and one at a time a process
        would deliver no faster than one round trip to the mail server allows), and one atomic
        unit records all their outcomes. So a busy outbox costs two writes per batch instead of
        two per message (docs/design.md §12.2). The round ends early when the mail service itself is
        unavailable: the other due messages would fail the same way, and stay due for the next
        round. The first message of a round goes alone, so that during an outage a round costs
        one try of one message."""
        handled = 0
        limit = 1
        while not self._stopping.is_set():
            claims = await self._claim(limit)
            if not claims:
                return handled
            try:
                done = await asyncio.gather(
                    *(self._deliver(c) for c in claims), return_exceptions=True
                )
            except asyncio.CancelledError:
                await self._release(claims)
                raise
            records = [d for d in done if isinstance(d, _Record)]
            if records:
                await self._record(records)
            handled += len(records)
            for failure in done:
                # A failure no outcome was recorded for: its row is claimed again after its lease.
                if isinstance(failure, BaseException):
                    raise failure
            if any(record.service_unavailable for record in records):
                return handled
            limit = self._concurrency
        return handled

    async def _release(self, claims: list[_Claim]) -> None:
        """Hand-offs cut short (a shutdown that could not wait for them): their rows are due
        again at once instead of when their leases run out. A mail server that took a message
        but whose reply was cut off receives it again, which at-least-once allows."""
        now = self._clock.now()
        detail = "interrupted by shutdown"
        records = [_Record(claim, "retry", now, detail, next_try=now) for claim in claims]
        try:
            await self._record(records)
        except Exception:
            logger.exception("outbox: leases not released; they run out in %d s", LEASE_SECONDS)
        else:
            logger.warning("outbox: %d hand-off(s) interrupted by shutdown, due again", len(claims))

    async def _claim(self, limit: int) -> list[_Claim]:
        """Up to `limit` due rows, leased, in the order they are due."""
        now = self._clock.now()
        # The claim, which also reads whether each attempt is live, is a single statement on the
        # database's fast path (on SQLite without an fsync of its own): if a crash loses it, the
        # lease simply is not there and the rows are claimed again, which at-least-once allows.
        rows = await self._db.statement(
            _CLAIM[self._db.dialect],
            {
                "now": now,
                "lease": now + LEASE_SECONDS,
                "max_failed": self._max_failed,
                "limit": limit,
            },
        )
        # The order of RETURNING is not the order of the subquery: the index's order again.
        rows.sort(key=itemgetter("id"))
        rows.sort(key=itemgetter("kind"), reverse=True)  # stable, so ids stay in order
        rows.sort(key=itemgetter("not_before"))
        return [
            _Claim(
                id=row["id"],
                tries=int(row["tries"]),
                kind=row["kind"],
                recipient=row["recipient"],
                sealed_message=row["sealed_message"],
                live=bool(row["live"]),
                claimed_at=now,
            )
            for row in rows
        ]

    async def _deliver(self, claim: _Claim) -> _Record:
        """Everything for one claimed row but writing its outcome, which is returned."""
        now = claim.claimed_at
        if not claim.live:
            return _Record(claim, "expired", now, "the attempt can no longer be completed")
        if not _deliverable_address(claim.recipient):
            # threats.md I6: a poisoned recipient never reaches the wire.
            return _Record(claim, "abandoned", now, "invalid recipient")
        try:
            opened = self._keyring.open(claim.sealed_message, context=_SEAL_CONTEXT + claim.id)
        except SealError:
            # Sealed under another root secret: it can never be sent.
            return _Record(claim, "abandoned", now, "unsealable")
        try:
            message = await self._render(opened, recipient=claim.recipient)
        except Exception as exc:
            # Rendering the same order again would fail the same way: a permanent failure. Any
            # other exception's text may quote the order, link included, so only its type is
            # kept; an OrderError's text names fields, never values.
            error = type(exc).__name__
            reason = str(exc) if isinstance(exc, OrderError) else error
            logged = f"{error}: {reason}" if isinstance(exc, OrderError) else error
            now = self._clock.now()
            logger.error("outbox: %s %s cannot be rendered: %s", claim.kind, claim.id, logged)
            self._events(
                SecurityEvent(
                    "mail.unrenderable",
                    now,
                    {"outbox_id": claim.id, "kind": claim.kind, "error": error},
                )
            )
            return _Record(claim, "abandoned", now, f"cannot render: {reason}")
        try:
            async with asyncio.timeout(SEND_DEADLINE_SECONDS):
                await self._transport.send(
                    recipient=claim.recipient, message=message, message_key=claim.id
                )
        except PermanentMailError as exc:
            logger.warning("outbox: %s %s refused: %s", claim.kind, claim.id, str(exc)[:200])
            return _Record(claim, "abandoned", self._clock.now(), str(exc))
        except (TransientMailError, OSError) as exc:
            # TimeoutError (the deadline above) is an OSError: the service did not answer.
            unavailable = isinstance(exc, MailServiceUnavailable | OSError)
            error = str(exc) or type(exc).__name__
            now = self._clock.now()
            if claim.tries >= MAX_TRIES:
                logger.warning("outbox: %s %s abandoned: %s", claim.kind, claim.id, error[:200])
                return _Record(
                    claim,
                    "abandoned",
                    now,
                    f"{error} (after {claim.tries} tries)",
                    service_unavailable=unavailable,
                    keeps_order=True,
                )
            delay = min(MAX_BACKOFF_SECONDS, 2**claim.tries)
            delay = int(delay * random.uniform(0.5, 1.0)) + 1  # noqa: S311 (jitter only)
            logger.warning(
                "outbox: %s %s try %d failed, next in %d s: %s",
                claim.kind,
                claim.id,
                claim.tries,
                delay,
                error[:200],
            )
            return _Record(
                claim, "retry", now, error, next_try=now + delay, service_unavailable=unavailable
            )
        return _Record(claim, "sent", self._clock.now(), None)

    async def _render(self, opened: bytes, *, recipient: str) -> bytes:
        if not opened.startswith(b"{"):
            # Queued by a release that stored the rendered message itself (a MIME message starts
            # with a header, never with "{"): it is handed off as it is.
            return opened
        order = decode_order(opened)
        if order.recipient != recipient:
            # The row's recipient is stored in plain form, the order's is sealed: they differ
            # only if the row was altered, and then the mail goes nowhere.
            raise OrderError("the order is for another recipient than its row")
        # In a worker thread: the loop goes on serving requests while the CPU-bound render runs.
        return await asyncio.to_thread(order.render, self._composer)

    async def _record(self, records: list[_Record]) -> None:
        """Each row's new state and its try, all atomically."""
        writes: list[Statement] = []
        for record in records:
            values = {
                "id": record.claim.id,
                "tries": record.claim.tries,
                "now": record.now,
                "outcome": record.outcome,
                "status": record.outcome,
                "next": record.next_try,
                "detail": None if record.detail is None else record.detail[:200],
            }
            update = _RETRY if record.outcome == "retry" else _FINISH
            if record.keeps_order:
                update = _GIVE_UP
            writes += [(update, values), (_TRY, values)]
        # Not durable (no fsync of its own on SQLite, no wait for the WAL flush on PostgreSQL):
        # if a power failure loses these records, the rows are claimed again when their leases
        # run out and the messages go again, which the at-least-once guarantee allows
        # (docs/design.md §12.2, §5, §7). On PostgreSQL one statement on the single-statement path,
        # instead of a transaction of BEGIN, the setting, the statements and COMMIT.
        await self._db.run_together(writes, durable=False)
        for record in records:
            OUTBOX_TRIES.labels(outcome=record.outcome).inc()


@dataclass(frozen=True)
class _Claim:
    id: str
    tries: int
    kind: str
    recipient: Any
    sealed_message: Any = field(repr=False)
    live: bool
    claimed_at: int


@dataclass(frozen=True)
class _Record:
    """The outcome of one claim, to be written."""

    claim: _Claim
    outcome: Outcome
    now: int
    detail: str | None
    next_try: int | None = None
    # A transient failure of the mail service as a whole: the round ends.
    service_unavailable: bool = False
    # Given up after the last try: the sealed order stays, for `splitlink outbox retry`.
    keeps_order: bool = False


def _deliverable_address(recipient: Any) -> bool:
    try:
        return bool(parse_email_address(recipient).address == recipient)
    except SplitlinkError:
        return False
