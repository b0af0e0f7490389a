"""Fixed-window rate limits kept in the database, so all workers and hosts share one count.

Bucket names are keyed hashes: a canonical email address never rests in this table in plain form.
"""

from __future__ import annotations

from protocol.split_secret import keyed_hash
from server.errors import RateLimited
from server.storage.database import Database


class RateLimiter:
    def __init__(self, db: Database, *, hmac_key: bytes, window: int) -> None:
        self._db = db
        self._hmac_key = hmac_key
        self._window = window

    def bucket(self, scope: str, subject: str) -> str:
        return (
            scope
            + ":"
            + keyed_hash(
                key=self._hmac_key, purpose="rate-limit", value=subject, context=scope
            ).hex()[:32]
        )

    async def hit(self, scope: str, subject: str, *, limit: int, now: int) -> None:
        """Count one request; raise RateLimited once the window's count passes `limit`."""
        window_start = now - now % self._window
        rows = await self._db.statement(
            "INSERT INTO rate_limits (bucket, window_start, hits, expires_at) "
            "VALUES (:bucket, :window_start, 1, :expires_at) "
            "ON CONFLICT (bucket, window_start) "
            "DO UPDATE SET hits = rate_limits.hits + 1 RETURNING hits",
            {
                "bucket": self.bucket(scope, subject),
                "window_start": window_start,
                "expires_at": window_start + self._window,
            },
        )
        if rows and int(rows[0]["hits"]) > limit:
            raise RateLimited(retry_after=window_start + self._window - now)
