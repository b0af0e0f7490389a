"""The outbox: mail is queued in the same transaction as the attempt it belongs to, and a
dispatcher inside the server delivers it afterwards (SPEC.md §7).

The rendered message is sealed (AES-256-GCM, key derived from the root secret) because a login
message carries the email half, and secrets never rest in plain form. After delivery, or when its
attempt can no longer be completed, the sealed message is deleted.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass

from protocol.encoding import b64url_encode
from server.clock import Clock, RandomBytes
from server.errors import TemporarilyUnavailable
from server.keyring import Keyring, SealError
from server.mail.transport import MailTransport, PermanentMailError, TransientMailError
from server.storage.database import Connection, Database

logger = logging.getLogger("splitlink.outbox")

LEASE_SECONDS = 60
MAX_BACKOFF_SECONDS = 600
# With backoff capped at 10 minutes, 12 tries span about an hour: longer than any attempt lives.
MAX_TRIES = 12
_SEAL_CONTEXT = "outbox:"


@dataclass(frozen=True)
class QueuedMail:
    id: str
    message_id: str


def new_queued_mail(*, random_bytes: RandomBytes, domain: str) -> QueuedMail:
    outbox_id = b64url_encode(random_bytes(16))
    return QueuedMail(id=outbox_id, message_id=f"<{outbox_id}@{domain}>")


async def enqueue(
    conn: Connection,
    mail: QueuedMail,
    *,
    kind: str,
    attempt_id: str | None,
    recipient: str,
    message: bytes,
    keyring: Keyring,
    random_bytes: RandomBytes,
    now: int,
) -> None:
    await conn.execute(
        "INSERT INTO outbox (id, kind, attempt_id, recipient, message_id, sealed_message, status, "
        "tries, not_before, created_at) VALUES (:id, :kind, :attempt_id, :recipient, "
        ":message_id, :sealed, 'queued', 0, :now, :now)",
        {
            "id": mail.id,
            "kind": kind,
            "attempt_id": attempt_id,
            "recipient": recipient,
            "message_id": mail.message_id,
            "sealed": keyring.seal(
                message, context=_SEAL_CONTEXT + mail.id, random_bytes=random_bytes
            ),
            "now": now,
        },
    )


class OutboxDispatcher:
    def __init__(
        self,
        db: Database,
        keyring: Keyring,
        transport: MailTransport,
        *,
        clock: Clock,
        poll_interval: float,
        max_failed_completions: int,
    ) -> None:
        self._db = db
        self._keyring = keyring
        self._transport = transport
        self._clock = clock
        self._poll_interval = poll_interval
        self._max_failed = max_failed_completions

    async def run_forever(self) -> None:
        while True:
            try:
                await self.dispatch_due()
            except TemporarilyUnavailable:
                logger.warning("outbox: database unavailable; will retry")
            except Exception:
                logger.exception("outbox: unexpected failure; will retry")
            await asyncio.sleep(self._poll_interval)

    async def dispatch_due(self) -> int:
        """Deliver every message that is due now; returns how many were handled."""
        handled = 0
        while await self._dispatch_one():
            handled += 1
        return handled

    async def _dispatch_one(self) -> bool:
        now = self._clock.now()
        async with self._db.autocommit() as conn:
            row = await conn.fetch_one(
                "UPDATE outbox SET lease_until = :lease, tries = tries + 1 "
                "WHERE id = (SELECT id FROM outbox WHERE status = 'queued' "
                "AND not_before <= :now AND (lease_until IS NULL OR lease_until < :now) "
                "ORDER BY not_before, id LIMIT 1) "
                "AND status = 'queued' AND (lease_until IS NULL OR lease_until < :now) "
                "RETURNING id, kind, attempt_id, recipient, sealed_message, tries",
                {"now": now, "lease": now + LEASE_SECONDS},
            )
            if row is None:
                return False
            if row["attempt_id"] is not None and not await self._attempt_is_live(
                conn, row["attempt_id"], now
            ):
                await self._finish(conn, row["id"], status="expired", now=now)
                return True
        try:
            message = self._keyring.open(row["sealed_message"], context=_SEAL_CONTEXT + row["id"])
        except SealError:
            # Sealed under another root secret: it can never be sent.
            async with self._db.autocommit() as conn:
                await self._finish(conn, row["id"], status="abandoned", now=now, error="unsealable")
            return True
        try:
            await self._transport.send(
                recipient=row["recipient"], message=message, message_key=row["id"]
            )
        except PermanentMailError as exc:
            async with self._db.autocommit() as conn:
                await self._finish(conn, row["id"], status="abandoned", now=now, error=str(exc))
            return True
        except (TransientMailError, OSError) as exc:
            if int(row["tries"]) >= MAX_TRIES:
                async with self._db.autocommit() as conn:
                    await self._finish(
                        conn, row["id"], status="abandoned", now=now, error=str(exc)[:200]
                    )
                return True
            delay = min(MAX_BACKOFF_SECONDS, 2 ** int(row["tries"]))
            delay = int(delay * random.uniform(0.5, 1.0)) + 1  # noqa: S311 (jitter, not a secret)
            async with self._db.autocommit() as conn:
                await conn.execute(
                    "UPDATE outbox SET lease_until = NULL, not_before = :next, last_error = :error "
                    "WHERE id = :id",
                    {"id": row["id"], "next": now + delay, "error": str(exc)[:200]},
                )
            return True
        async with self._db.autocommit() as conn:
            await self._finish(conn, row["id"], status="sent", now=self._clock.now())
        return True

    async def _attempt_is_live(self, conn: Connection, attempt_id: str, now: int) -> bool:
        row = await conn.fetch_one(
            "SELECT 1 AS live FROM login_attempts WHERE id = :id AND consumed_at IS NULL "
            "AND expires_at > :now AND failed_count < :max",
            {"id": attempt_id, "now": now, "max": self._max_failed},
        )
        return row is not None

    async def _finish(
        self, conn: Connection, outbox_id: str, *, status: str, now: int, error: str | None = None
    ) -> None:
        await conn.execute(
            "UPDATE outbox SET status = :status, sealed_message = NULL, lease_until = NULL, "
            "sent_at = CASE WHEN :status = 'sent' THEN :now ELSE sent_at END, "
            "last_error = COALESCE(:error, last_error) WHERE id = :id",
            {"id": outbox_id, "status": status, "now": now, "error": error},
        )
