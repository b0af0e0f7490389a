"""Records that more than one store takes or returns. A store's own records live in its module."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SealedMail:
    """A message for the outbox: its order sealed (server/mail/outbox.py), ready to store."""

    id: str
    kind: str
    attempt_id: str | None
    recipient: str
    message_id: str
    sealed: str

    def __repr__(self) -> str:
        return f"SealedMail(id={self.id!r}, kind={self.kind!r})"
