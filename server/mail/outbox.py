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

The dispatcher claims due messages, delivers each (server/mail/delivery.py) and records what
became of them, through an `OutboxStore` (server/storage/outbox.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from protocol.encoding import b64url_encode
from server.clock import Clock, RandomBytes
from server.errors import TemporarilyUnavailable
from server.events import EventSink
from server.keyring import Keyring
from server.mail.compose import MailComposer
from server.mail.delivery import Courier, Delivery
from server.mail.orders import MailOrder, encode_order, seal_context
from server.mail.transport import MailTransport
from server.metrics import OUTBOX_TRIES
from server.storage.outbox import ClaimedMail, DeliveryRecord
from server.storage.records import SealedMail

logger = logging.getLogger("splitlink.outbox")

LEASE_SECONDS = 60


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
            encode_order(order), context=seal_context(mail.id), random_bytes=random_bytes
        ),
    )


class OutboxStore(Protocol):
    """Where the dispatcher finds due mail and records what became of it."""

    async def claim(self, *, now: int, lease_until: int, limit: int) -> list[ClaimedMail]:
        """Up to `limit` due messages, leased until `lease_until` in one atomic step, in the
        order they are due: oldest first, and within one second other mail before login links.
        A message whose lease runs is not claimed again. Each says whether it is still worth
        sending: a login link only while its attempt can be completed."""

    async def release(self, claims: Sequence[ClaimedMail], *, now: int, reason: str) -> None:
        """Claims given up unfinished: due again at `now`, each try recorded as a retry."""

    async def record(self, records: Sequence[DeliveryRecord]) -> None:
        """Each message's new state and its try, all atomically. A retry changes a message only
        while its claim still holds it; a delivery is always recorded as one."""


class OutboxDispatcher:
    def __init__(
        self,
        *,
        store: OutboxStore,
        keyring: Keyring,
        transport: MailTransport,
        composer: MailComposer,
        clock: Clock,
        events: EventSink,
        poll_interval: float,
        concurrency: int = 1,
    ) -> None:
        self._store = store
        self._concurrency = concurrency
        self._keyring = keyring
        self._transport = transport
        self._composer = composer
        self._clock = clock
        self._events = events
        self._poll_interval = poll_interval
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
            courier = self._courier()
            try:
                done = await asyncio.gather(
                    *(courier.deliver(c) for c in claims), return_exceptions=True
                )
            except asyncio.CancelledError:
                await self._release(claims)
                raise
            deliveries = [d for d in done if isinstance(d, Delivery)]
            if deliveries:
                await self._record([d.record for d in deliveries])
            handled += len(deliveries)
            for failure in done:
                # A failure no outcome was recorded for: its row is claimed again after its lease.
                if isinstance(failure, BaseException):
                    raise failure
            if any(d.service_unavailable for d in deliveries):
                return handled
            limit = self._concurrency
        return handled

    async def _claim(self, limit: int) -> list[ClaimedMail]:
        """Up to `limit` due rows, leased, in the order they are due."""
        now = self._clock.now()
        return await self._store.claim(now=now, lease_until=now + LEASE_SECONDS, limit=limit)

    def _courier(self) -> Courier:
        return Courier(
            keyring=self._keyring,
            transport=self._transport,
            composer=self._composer,
            clock=self._clock,
            events=self._events,
        )

    async def _record(self, records: list[DeliveryRecord]) -> None:
        await self._store.record(records)
        for record in records:
            OUTBOX_TRIES.labels(outcome=record.outcome).inc()

    async def _release(self, claims: list[ClaimedMail]) -> None:
        """Hand-offs cut short (a shutdown that could not wait for them): their rows are due
        again at once instead of when their leases run out. A mail server that took a message
        but whose reply was cut off receives it again, which at-least-once allows."""
        try:
            await self._store.release(
                claims, now=self._clock.now(), reason="interrupted by shutdown"
            )
        except Exception:
            logger.exception("outbox: leases not released; they run out in %d s", LEASE_SECONDS)
        else:
            OUTBOX_TRIES.labels(outcome="retry").inc(len(claims))
            logger.warning("outbox: %d hand-off(s) interrupted by shutdown, due again", len(claims))
