"""Outbox rows: how a message is queued with the event it reports."""

from __future__ import annotations

from server.storage.database import Statement
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
