"""Fixed-window rate limits kept in the database, so all workers and hosts share one count.

Bucket names are keyed hashes: a canonical email address never rests in this table in plain form.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from protocol.split_secret import keyed_hash
from server.errors import RateLimited
from server.metrics import RATE_LIMIT_REFUSALS
from server.storage.database import Connection, Database, Row, Statement, prefixed_parameters

_INTO = "INSERT INTO rate_limits (bucket, window_start, hits, expires_at) "
_ADD_ONE = (
    " ON CONFLICT (bucket, window_start) DO UPDATE SET hits = rate_limits.hits + 1 RETURNING hits"
)
# One count: a bucket's row for the window, added if missing, else its hits plus one.
_COUNT = f"{_INTO}VALUES (:bucket, :window_start, 1, :expires_at){_ADD_ONE}"
# On PostgreSQL, two counts in one statement: the first as `_COUNT`, the second bucket only while
# the first is within its limit. Each count sees its bucket's row as committed or locks it, so
# concurrent requests all count, as with two statements.
_COUNTS_IN_TURN = (
    f"WITH counted_first AS ({_COUNT}), counted_second AS ({_INTO}"  # noqa: S608 - constants
    "SELECT :second, :window_start, 1, :expires_at FROM counted_first "
    f"WHERE counted_first.hits <= :first_limit{_ADD_ONE})"
)
_HITS = (
    "(SELECT hits FROM counted_first) AS first_hits, "
    "(SELECT hits FROM counted_second) AS second_hits"
)
_COUNT_IN_TURN = f"{_COUNTS_IN_TURN} SELECT {_HITS}"
_COUNT_COLUMNS = frozenset({"first_hits", "second_hits", "beside_rows"})


@functools.lru_cache(maxsize=8)  # the reads are the server's constants
def _count_in_turn_beside(read: str) -> str:
    """`_COUNT_IN_TURN` with `read` in the same statement: one row of the counts for each row
    of `read`, and one with `read`'s columns null when it has none (`beside_rows` tells)."""
    return (
        f"{_COUNTS_IN_TURN}, beside AS ({prefixed_parameters(read, 'beside_')}) "  # noqa: S608
        f"SELECT {_HITS}, (SELECT count(*) FROM beside) AS beside_rows, beside.* "
        "FROM (SELECT) AS counts LEFT JOIN beside ON true"
    )


@dataclass(frozen=True)
class Limit:
    """At most `limit` requests per window for `subject` within `scope`."""

    scope: str
    subject: str
    limit: int


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

    def _window_of(self, now: int) -> tuple[dict[str, int], int]:
        """The current window's values for the count statements, and the seconds until the
        next window."""
        window_start = now - now % self._window
        expires_at = window_start + self._window
        return {"window_start": window_start, "expires_at": expires_at}, expires_at - now

    async def hit(self, limit: Limit, *, now: int) -> None:
        """Count one request; raise RateLimited once the window's count passes the limit."""
        values, retry_after = self._window_of(now)
        rows = await self._db.statement(
            _COUNT, {**values, "bucket": self.bucket(limit.scope, limit.subject)}
        )
        if rows and int(rows[0]["hits"]) > limit.limit:
            raise _refused(limit, retry_after)

    async def hit_in_turn(
        self, first: Limit, second: Limit, *, now: int, beside: Statement | None = None
    ) -> list[Row]:
        """`hit` of `first`, then of `second`, as one unit: `second` is counted only while
        `first` is within its limit, so a client refused by `first` (an IP address) cannot go on
        using up `second` (an email address's bucket, which would lock its owner out). One
        statement on PostgreSQL, one write transaction on SQLite, where two `hit`s were two.

        `beside`, a read that does not depend on the counts, is answered with them: on
        PostgreSQL in the same statement, which saves the request a round trip, and on SQLite,
        where a statement is a call, after them and outside the write lock. Its rows are
        returned once both counts are within their limits; its columns may not be named
        first_hits, second_hits or beside_rows."""
        values, retry_after = self._window_of(now)
        first_bucket = self.bucket(first.scope, first.subject)
        second_bucket = self.bucket(second.scope, second.subject)
        read: list[Row] = []
        if self._db.dialect == "postgresql":
            counts = {
                **values,
                "bucket": first_bucket,
                "second": second_bucket,
                "first_limit": first.limit,
            }
            if beside is None:
                rows = await self._db.statement(_COUNT_IN_TURN, counts)
            else:
                query, given = beside
                rows = await self._db.statement(
                    _count_in_turn_beside(query),
                    {**counts, **{f"beside_{name}": v for name, v in given.items()}},
                )
                if rows[0]["beside_rows"]:
                    read = [
                        {k: v for k, v in row.items() if k not in _COUNT_COLUMNS} for row in rows
                    ]
            first_hits, second_hits = rows[0]["first_hits"], rows[0]["second_hits"]
        else:

            async def count(conn: Connection) -> tuple[int, int | None]:
                one = await conn.fetch_one(_COUNT, {**values, "bucket": first_bucket})
                hits = 0 if one is None else int(one["hits"])
                if hits > first.limit:
                    return hits, None
                two = await conn.fetch_one(_COUNT, {**values, "bucket": second_bucket})
                return hits, None if two is None else int(two["hits"])

            # Not durable, like a single count: a count lost in a power failure lets a few
            # more requests through in that window.
            first_hits, second_hits = await self._db.run(count, durable=False)
        if first_hits is not None and int(first_hits) > first.limit:
            raise _refused(first, retry_after)
        if second_hits is not None and int(second_hits) > second.limit:
            raise _refused(second, retry_after)
        if beside is not None and self._db.dialect != "postgresql":
            read = await self._db.statement(*beside)
        return read


def _refused(limit: Limit, retry_after: int) -> RateLimited:
    """The refusal of a request that passed `limit`, counted by its scope."""
    RATE_LIMIT_REFUSALS.labels(limit=limit.scope).inc()
    return RateLimited(retry_after=retry_after)
