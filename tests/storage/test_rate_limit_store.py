"""The rate-limit store (server/storage/ratelimit.py) on both backends: what server/ratelimit.py's
`RateLimitStore` requires of it."""

from __future__ import annotations

import pytest
from support.backends import execute, query

from server.storage.database import Database
from server.storage.rate_limit_records import Turn, Window
from server.storage.ratelimit import DatabaseRateLimitStore, counts_in_turn

pytestmark = pytest.mark.anyio

_WINDOW = Window(start=900, expires_at=1800)


async def test_a_count_returns_each_increment_of_its_bucket_in_its_window(
    database: Database,
) -> None:
    store = DatabaseRateLimitStore(database)
    seen = [await store.count(bucket="a", window=_WINDOW) for _ in range(3)]
    assert seen == [1, 2, 3]
    assert await store.count(bucket="b", window=_WINDOW) == 1
    assert await store.count(bucket="a", window=Window(start=1800, expires_at=2700)) == 1


async def test_a_count_stores_its_window_and_when_the_row_expires(
    database: Database, database_url: str
) -> None:
    await DatabaseRateLimitStore(database).count(bucket="a", window=_WINDOW)
    assert query(
        database_url, "SELECT bucket, window_start, hits, expires_at FROM rate_limits"
    ) == [("a", 900, 1, 1800)]


async def test_counts_in_turn_count_every_bucket_in_order_while_each_is_within(
    database: Database,
) -> None:
    store = DatabaseRateLimitStore(database)
    turns = (Turn(bucket="a", limit=5), Turn(bucket="b", limit=5), Turn(bucket="c", limit=5))
    assert await store.count_in_turn(turns=turns, window=_WINDOW) == (1, 1, 1)
    assert await store.count_in_turn(turns=turns, window=_WINDOW) == (2, 2, 2)


async def test_counts_in_turn_stop_after_the_first_bucket_over_its_limit(
    database: Database, database_url: str
) -> None:
    store = DatabaseRateLimitStore(database)
    turns = (Turn(bucket="a", limit=3), Turn(bucket="b", limit=1), Turn(bucket="c", limit=5))
    seen = [await store.count_in_turn(turns=turns, window=_WINDOW) for _ in range(4)]
    assert seen == [(1, 1, 1), (2, 2, None), (3, 3, None), (4, None, None)]
    assert query(database_url, "SELECT bucket, hits FROM rate_limits ORDER BY bucket") == [
        ("a", 4),
        ("b", 3),
        ("c", 1),
    ]


async def test_counts_in_turn_share_their_rows_with_single_counts(database: Database) -> None:
    store = DatabaseRateLimitStore(database)
    await store.count(bucket="a", window=_WINDOW)
    turns = (Turn(bucket="a", limit=1), Turn(bucket="b", limit=1))
    assert await store.count_in_turn(turns=turns, window=_WINDOW) == (2, None)


_ACCOUNT = "SELECT id, email_address FROM users WHERE email_canonical = :canonical"


async def test_a_read_beside_the_counts_is_answered_with_them_and_is_empty_when_it_finds_nothing(
    database: Database, database_url: str
) -> None:
    turns = (Turn(bucket="a", limit=5),)
    beside = (_ACCOUNT, {"canonical": "x@example.com"})
    assert await counts_in_turn(database, turns=turns, window=_WINDOW, beside=beside) == ((1,), [])
    execute(
        database_url,
        "INSERT INTO users (id, email_canonical, email_address, created_at) "
        "VALUES ('u1', 'x@example.com', 'X@example.com', 1)",
    )
    hits, rows = await counts_in_turn(database, turns=turns, window=_WINDOW, beside=beside)
    assert hits == (2,)
    assert [dict(row) for row in rows] == [{"id": "u1", "email_address": "X@example.com"}]
