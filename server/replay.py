"""The DPoP `jti` replay store (RFC 9449 §11.1), shared by every worker through the database.

An entry lives as long as its proof could still pass the `iat` check, so it survives restarts and
is seen by all processes. The insert is one atomic statement keyed by (jkt, jti).
"""

from __future__ import annotations

from protocol.dpop import VerifiedDPoPProof
from protocol.errors import InvalidDPoPProof
from server.storage.database import Database


class ReplayStore:
    def __init__(self, db: Database, *, retention: int) -> None:
        self._db = db
        self._retention = retention

    async def record(self, proof: VerifiedDPoPProof, *, now: int) -> None:
        """Record a proof's first use; raise InvalidDPoPProof if it was used before."""
        async with self._db.autocommit() as conn:
            row = await conn.fetch_one(
                "INSERT INTO dpop_replay (replay_key, expires_at) VALUES (:key, :expires_at) "
                "ON CONFLICT (replay_key) DO NOTHING RETURNING replay_key",
                {"key": proof.replay_key, "expires_at": now + self._retention},
            )
        if row is None:
            raise InvalidDPoPProof("DPoP proof has been used before")
