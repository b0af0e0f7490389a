"""The DPoP replay entries in the database (RFC 9449 §11.1), for `server.replay.ReplayStore`.

An entry lives as long as its proof could still pass the `iat` check, and the insert is one atomic
statement keyed by the proof's replay key. The stores of the flows a proof admits write the entry
with their own work (`record_in`, `record_with`, `record_beside`), so it commits with that work.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from protocol.dpop import VerifiedDPoPProof
from protocol.errors import InvalidDPoPProof
from server.storage.database import (
    UNIQUE_VIOLATIONS,
    Connection,
    Database,
    Row,
    Statement,
    is_unique_violation,
)

REPLAY_KEY_BYTES = 16


def stored_replay_key(proof: VerifiedDPoPProof) -> bytes:
    """The first 128 bits of the proof's SHA-256 replay key: a quarter of the index size of the
    hexadecimal text, and collisions stay out of reach (migration 0003)."""
    return bytes.fromhex(proof.replay_key)[:REPLAY_KEY_BYTES]


_ENTRY = "INSERT INTO dpop_replay (replay_key, expires_at) VALUES (:key, :expires_at)"
# On its own, a replay is told by the row not returned.
_RECORD = _ENTRY + " ON CONFLICT (replay_key) DO NOTHING RETURNING expires_at"


class DatabaseReplayStore:
    def __init__(self, db: Database, *, retention: int) -> None:
        self._db = db
        self._retention = retention

    def _values(self, proof: VerifiedDPoPProof, now: int) -> dict[str, object]:
        return {"key": stored_replay_key(proof), "expires_at": now + self._retention}

    async def record(self, proof: VerifiedDPoPProof, *, now: int) -> None:
        if not await self._db.statement(_RECORD, self._values(proof, now)):
            raise InvalidDPoPProof("DPoP proof has been used before")

    async def record_in(
        self,
        conn: Connection,
        proof: VerifiedDPoPProof,
        *,
        now: int,
        read: Statement | None = None,
    ) -> list[Row]:
        """The same entry, written by the transaction of the work the proof admits: it commits
        with that work, and a replay raises before the work begins (docs/design.md §11.1). `read`,
        the work's first query, runs in the same round trip and its rows are returned; it must not
        depend on the entry (`Connection.run_together`). A plain insert here: a duplicate key
        fails it, and with it the transaction, where a conditional insert would need a round
        trip of its own to report what it did."""
        with refusing_reuse():
            return await conn.run_together([(_ENTRY, self._values(proof, now))], read)

    async def record_with(
        self,
        proof: VerifiedDPoPProof,
        *,
        now: int,
        writes: Sequence[Statement],
        read: Statement | None = None,
    ) -> list[Row]:
        """The entry, the work's `writes` and `read` (its rows are returned) as one atomic unit
        of their own, durably: on PostgreSQL one statement, without a transaction around it
        (docs/design.md §11.1, §7). As with `record_in`, `read` must not depend on the
        entry."""
        with refusing_reuse():
            return await self._db.run_together([(_ENTRY, self._values(proof, now)), *writes], read)

    async def record_beside(
        self, proof: VerifiedDPoPProof, *, now: int, read: Statement
    ) -> list[Row]:
        """The entry on its own, as `record` writes it, and `read` beside it: one statement on
        PostgreSQL, which saves a round trip per request. On SQLite, where a statement is a call
        rather than a round trip, `read` runs first and outside the write lock, then `record`.
        A replay raises InvalidDPoPProof on both, whatever `read` found."""
        if self._db.dialect == "sqlite":
            rows = await self._db.statement(*read)
            await self.record(proof, now=now)
            return rows
        with refusing_reuse():
            return await self._db.run_together(
                [(_ENTRY, self._values(proof, now))], read, durable=False
            )


@contextmanager
def refusing_reuse() -> Iterator[None]:
    """A duplicate entry, refused by the table's key, is a replayed proof."""
    try:
        yield
    except UNIQUE_VIOLATIONS as exc:
        if is_unique_violation(exc, table="dpop_replay"):
            raise InvalidDPoPProof("DPoP proof has been used before") from exc
        raise
