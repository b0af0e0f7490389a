"""The rate-limit counts in the `rate_limits` table (server/ratelimit.py's `RateLimitStore`).

One count is an upsert of a bucket's row for the window. Counts in turn are one statement on
PostgreSQL and one write transaction on SQLite.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from server.storage.database import Connection, Database, Row, Statement, prefixed_parameters
from server.storage.rate_limit_records import Turn, Window

_INTO = "INSERT INTO rate_limits (bucket, window_start, hits, expires_at) "
_ADD_ONE = (
    " ON CONFLICT (bucket, window_start) DO UPDATE SET hits = rate_limits.hits + 1 RETURNING hits"
)
# One count: a bucket's row for the window, added if missing, else its hits plus one.
_COUNT = f"{_INTO}VALUES (:bucket, :window_start, 1, :expires_at){_ADD_ONE}"


@functools.lru_cache(maxsize=8)  # the counts and reads are the server's constants
def _counts_in_turn(buckets: int, read: str | None) -> str:
    """On PostgreSQL, `buckets` counts in one statement: the first as `_COUNT`, each later one
    only while the one before it is within its limit. Each count sees its bucket's row as
    committed or locks it, so concurrent requests all count, as with separate statements.

    With `read`, a read that does not depend on the counts, in the same statement: one row of
    the counts for each row of `read`, and one with `read`'s columns null when it has none
    (`beside_rows` tells)."""
    counted = [f"counted_1 AS ({_INTO}VALUES (:bucket_1, :window_start, 1, :expires_at){_ADD_ONE})"]
    for n in range(2, buckets + 1):
        counted.append(
            f"counted_{n} AS ({_INTO}SELECT :bucket_{n}, :window_start, 1, :expires_at "  # noqa: S608
            f"FROM counted_{n - 1} WHERE counted_{n - 1}.hits <= :limit_{n - 1}{_ADD_ONE})"
        )
    hits = ", ".join(
        f"(SELECT hits FROM counted_{n}) AS hits_{n}"  # noqa: S608 - numbered names
        for n in range(1, buckets + 1)
    )
    if read is None:
        return f"WITH {', '.join(counted)} SELECT {hits}"
    return (
        f"WITH {', '.join(counted)}, beside AS ({prefixed_parameters(read, 'beside_')}) "  # noqa: S608
        f"SELECT {hits}, (SELECT count(*) FROM beside) AS beside_rows, beside.* "
        "FROM (SELECT) AS counts LEFT JOIN beside ON true"
    )


def _is_count_column(name: str) -> bool:
    return name == "beside_rows" or (name.startswith("hits_") and name[5:].isdigit())


def _window_values(window: Window) -> dict[str, int]:
    return {"window_start": window.start, "expires_at": window.expires_at}


async def counts_in_turn(
    db: Database, *, turns: Sequence[Turn], window: Window, beside: Statement | None = None
) -> tuple[tuple[int | None, ...], list[Row]]:
    """Count `turns` in order as one unit, each only while the one before it is within its
    limit: the hits of each, None for a bucket not counted. One statement on PostgreSQL, one
    write transaction on SQLite.

    `beside`, a read that does not depend on the counts, is answered with them (its rows are
    returned): on PostgreSQL in the same statement, which saves the request a round trip, and
    on SQLite, where a statement is a call, after them and outside the write lock. Its columns
    may not be named beside_rows or hits_ and a number."""
    values = _window_values(window)
    read: list[Row] = []
    if db.dialect == "postgresql":
        counts: dict[str, object] = dict(values)
        for n, turn in enumerate(turns, start=1):
            counts[f"bucket_{n}"] = turn.bucket
            counts[f"limit_{n}"] = turn.limit
        del counts[f"limit_{len(turns)}"]  # no count follows the last
        if beside is None:
            rows = await db.statement(_counts_in_turn(len(turns), None), counts)
        else:
            query, given = beside
            rows = await db.statement(
                _counts_in_turn(len(turns), query),
                {**counts, **{f"beside_{name}": v for name, v in given.items()}},
            )
            if rows[0]["beside_rows"]:
                read = [{k: v for k, v in row.items() if not _is_count_column(k)} for row in rows]
        hits = tuple(
            None if rows[0][f"hits_{n}"] is None else int(rows[0][f"hits_{n}"])
            for n in range(1, len(turns) + 1)
        )
        return hits, read

    async def count(conn: Connection) -> list[int | None]:
        counted: list[int | None] = [None] * len(turns)
        for n, turn in enumerate(turns):
            row = await conn.fetch_one(_COUNT, {**values, "bucket": turn.bucket})
            this = 0 if row is None else int(row["hits"])
            counted[n] = this
            if this > turn.limit:
                break
        return counted

    # Not durable, like a single count: a count lost in a power failure lets a few more
    # requests through in that window.
    counted = await db.run(count, durable=False)
    if beside is not None:
        read = await db.statement(*beside)
    return tuple(counted), read


class DatabaseRateLimitStore:
    """The counts of server/ratelimit.py, shared by all workers and hosts on the database."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def count(self, *, bucket: str, window: Window) -> int:
        """One hit of `bucket` in `window`; the window's hits so far, this one included."""
        rows = await self._db.statement(_COUNT, {**_window_values(window), "bucket": bucket})
        return int(rows[0]["hits"]) if rows else 0

    async def count_in_turn(
        self, *, turns: Sequence[Turn], window: Window
    ) -> tuple[int | None, ...]:
        """`counts_in_turn` without a read."""
        hits, _ = await counts_in_turn(self._db, turns=turns, window=window)
        return hits
