"""One claimed message, from its claim to its outcome (SPEC.md §7.2, docs/design.md §12.2 steps 2
to 5): skip stale mail, refuse what cannot be sent, render, hand off. Writing the outcome is the
dispatcher's (server/mail/outbox.py), for a whole batch at once."""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass

from protocol.email_address import parse_email_address
from protocol.errors import SplitlinkError
from server.clock import Clock
from server.events import EventSink, SecurityEvent
from server.keyring import Keyring, SealError
from server.mail.compose import MailComposer
from server.mail.orders import OrderError, decode_order, seal_context
from server.mail.transport import (
    MailServiceUnavailable,
    MailTransport,
    PermanentMailError,
    TransientMailError,
)
from server.storage.outbox import ClaimedMail, DeliveryOutcome, DeliveryRecord

logger = logging.getLogger("splitlink.outbox")

MAX_BACKOFF_SECONDS = 600
# With backoff capped at 10 minutes, 12 tries span about an hour: longer than any attempt lives.
MAX_TRIES = 12
# One hand-off may take this long (wall clock) before it counts as a transient failure: well
# inside the lease, so a slow server rarely causes a second, concurrent delivery.
SEND_DEADLINE_SECONDS = 45.0


@dataclass(frozen=True, slots=True)
class Delivery:
    """The outcome of one claim, to be recorded."""

    record: DeliveryRecord
    # A transient failure of the mail service as a whole: the round ends.
    service_unavailable: bool = False


@dataclass(frozen=True, slots=True)
class Courier:
    """What a delivery needs besides the claim."""

    keyring: Keyring
    transport: MailTransport
    composer: MailComposer
    clock: Clock
    events: EventSink

    async def deliver(self, claim: ClaimedMail) -> Delivery:
        """Everything for one claimed message but writing its outcome, which is returned."""
        now = claim.claimed_at
        # Step 2: a login link whose attempt can no longer be completed is not sent (I4).
        if not claim.live:
            return _outcome(claim, "expired", now, "the attempt can no longer be completed")
        # Step 3: threats.md I6, a poisoned recipient never reaches the wire.
        if not _deliverable_address(claim.recipient):
            return _outcome(claim, "abandoned", now, "invalid recipient")
        try:
            opened = self.keyring.open(claim.sealed_message or "", context=seal_context(claim.id))
        except SealError:
            # Sealed under another root secret (or, in an altered row, not there): it can never
            # be sent.
            return _outcome(claim, "abandoned", now, "unsealable")
        # Step 4.
        try:
            message = await self._render(opened, recipient=claim.recipient)
        except Exception as exc:
            return self._unrenderable(claim, exc)
        # Step 5.
        try:
            async with asyncio.timeout(SEND_DEADLINE_SECONDS):
                await self.transport.send(
                    recipient=claim.recipient, message=message, message_key=claim.id
                )
        except PermanentMailError as exc:
            logger.warning("outbox: %s %s refused: %s", claim.kind, claim.id, str(exc)[:200])
            return _outcome(claim, "abandoned", self.clock.now(), str(exc))
        except (TransientMailError, OSError) as exc:
            # TimeoutError (the deadline above) is an OSError: the service did not answer.
            return self._transient(claim, exc)
        return _outcome(claim, "sent", self.clock.now(), None)

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
        return await asyncio.to_thread(order.render, self.composer)

    def _unrenderable(self, claim: ClaimedMail, exc: Exception) -> Delivery:
        """Given up at once, and always with the event `mail.unrenderable`: rendering the same
        order again would fail the same way. Any exception's text but an OrderError's may quote
        the order, link included, so only its type is kept; an OrderError's text names fields,
        never values."""
        error = type(exc).__name__
        reason = str(exc) if isinstance(exc, OrderError) else error
        logged = f"{error}: {reason}" if isinstance(exc, OrderError) else error
        now = self.clock.now()
        logger.error("outbox: %s %s cannot be rendered: %s", claim.kind, claim.id, logged)
        self.events(
            SecurityEvent(
                "mail.unrenderable",
                now,
                {"outbox_id": claim.id, "kind": claim.kind, "error": error},
            )
        )
        return _outcome(claim, "abandoned", now, f"cannot render: {reason}")

    def _transient(self, claim: ClaimedMail, exc: Exception) -> Delivery:
        """Tried again after an exponential backoff with jitter, or given up after the last try
        with its sealed order kept."""
        unavailable = isinstance(exc, MailServiceUnavailable | OSError)
        error = str(exc) or type(exc).__name__
        now = self.clock.now()
        if claim.tries >= MAX_TRIES:
            logger.warning("outbox: %s %s abandoned: %s", claim.kind, claim.id, error[:200])
            record = DeliveryRecord(
                claim=claim,
                outcome="abandoned",
                at=now,
                detail=f"{error} (after {claim.tries} tries)",
                keeps_order=True,
            )
            return Delivery(record, service_unavailable=unavailable)
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
        record = DeliveryRecord(
            claim=claim, outcome="retry", at=now, detail=error, next_try=now + delay
        )
        return Delivery(record, service_unavailable=unavailable)


def _outcome(claim: ClaimedMail, outcome: DeliveryOutcome, at: int, detail: str | None) -> Delivery:
    return Delivery(DeliveryRecord(claim=claim, outcome=outcome, at=at, detail=detail))


def _deliverable_address(recipient: str) -> bool:
    try:
        return bool(parse_email_address(recipient).address == recipient)
    except SplitlinkError:
        return False
