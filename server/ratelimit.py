"""Fixed-window rate limits kept in the database, so all workers and hosts share one count.

Bucket names are keyed hashes: a canonical email address never rests in this table in plain form.
"""

from __future__ import annotations

import functools
import ipaddress
import json
from collections.abc import Sequence
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


# NAT64's well-known prefix (RFC 6052): a translated IPv4 client appears as this prefix and its
# IPv4 address in the last 32 bits.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address that an IPv6 address stands for: IPv4-mapped, 6to4 (one IPv4 address
    holds all of 2002:a.b.c.d::/48), NAT64, and Teredo's client. Whoever holds that IPv4
    address holds these, so they count as it does, not as the many networks they span."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
    if ip.teredo is not None:
        return ip.teredo[1]
    return None


def rate_limit_client(address: str, *, ipv6_prefix: int) -> str:
    """What the per-IP limits count at `ipv6_prefix`: an IPv4 address, or an IPv6 address that
    embeds one, as that IPv4 address; any other IPv6 address as its network of `ipv6_prefix`
    bits. At `rate_limit_ipv6_prefix` this is the client (one holder of a /64, the least a site
    is given, can use any of its addresses, so counting each would let it start without
    limit); at `rate_limit_ipv6_network_prefix` it is the client's network, the allocation one
    subscriber may hold. Anything that is not an IP address is its own client and network."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is None:
            return str(ipaddress.IPv6Network((ip, ipv6_prefix), strict=False))
        ip = embedded
    return str(ip)


def pair(first: str, second: str) -> str:
    """One subject of two parts (an address and a client or key), unambiguous whatever the
    parts hold."""
    return json.dumps([first, second])


@dataclass(frozen=True)
class Limit:
    """At most `limit` requests per window for `subject` within `scope`."""

    scope: str
    subject: str
    limit: int


@dataclass(frozen=True)
class Counts:
    """What `RateLimiter.hit_in_turn` counted: the window's hits of each limit, in order, None
    for a limit not counted because one before it was over; and the rows of its read."""

    limits: tuple[Limit, ...]
    hits: tuple[int | None, ...]
    read: tuple[Row, ...]
    retry_after: int

    def within(self, limit: Limit) -> bool:
        hits = self.hits[self.limits.index(limit)]
        return hits is not None and hits <= limit.limit

    def require(self, *limits: Limit) -> None:
        """Raise RateLimited unless each of `limits` was counted and is within its limit."""
        for limit in limits:
            if not self.within(limit):
                # The bucket that passed its limit: this one, or one counted before it.
                passed = next(
                    counted
                    for counted, hits in zip(self.limits, self.hits, strict=True)
                    if hits is not None and hits > counted.limit
                )
                raise _refused(passed, self.retry_after)


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
        self, limits: Sequence[Limit], *, now: int, beside: Statement | None = None
    ) -> Counts:
        """Count `limits` in turn as one unit, each only while the one before it is within its
        limit: a client refused by one (its IP address) cannot go on using up the later ones
        (an email address's buckets, which would lock its owner out). One statement on
        PostgreSQL, one write transaction on SQLite. Nothing is refused here: the caller says
        which limits bind (`Counts.require`).

        `beside`, a read that does not depend on the counts, is answered with them: on
        PostgreSQL in the same statement, which saves the request a round trip, and on SQLite,
        where a statement is a call, after them and outside the write lock. Its columns may not
        be named beside_rows or hits_ and a number."""
        values, retry_after = self._window_of(now)
        buckets = [self.bucket(limit.scope, limit.subject) for limit in limits]
        read: list[Row] = []
        hits: list[int | None]
        if self._db.dialect == "postgresql":
            counts: dict[str, object] = dict(values)
            for n, (limit, bucket) in enumerate(zip(limits, buckets, strict=True), start=1):
                counts[f"bucket_{n}"] = bucket
                counts[f"limit_{n}"] = limit.limit
            del counts[f"limit_{len(limits)}"]  # no count follows the last
            if beside is None:
                rows = await self._db.statement(_counts_in_turn(len(limits), None), counts)
            else:
                query, given = beside
                rows = await self._db.statement(
                    _counts_in_turn(len(limits), query),
                    {**counts, **{f"beside_{name}": v for name, v in given.items()}},
                )
                if rows[0]["beside_rows"]:
                    read = [
                        {k: v for k, v in row.items() if not _is_count_column(k)} for row in rows
                    ]
            hits = [
                None if rows[0][f"hits_{n}"] is None else int(rows[0][f"hits_{n}"])
                for n in range(1, len(limits) + 1)
            ]
        else:

            async def count(conn: Connection) -> list[int | None]:
                counted: list[int | None] = [None] * len(limits)
                for n, (limit, bucket) in enumerate(zip(limits, buckets, strict=True)):
                    row = await conn.fetch_one(_COUNT, {**values, "bucket": bucket})
                    this = 0 if row is None else int(row["hits"])
                    counted[n] = this
                    if this > limit.limit:
                        break
                return counted

            # Not durable, like a single count: a count lost in a power failure lets a few
            # more requests through in that window.
            hits = await self._db.run(count, durable=False)
            if beside is not None:
                read = await self._db.statement(*beside)
        return Counts(
            limits=tuple(limits), hits=tuple(hits), read=tuple(read), retry_after=retry_after
        )


def _refused(limit: Limit, retry_after: int) -> RateLimited:
    """The refusal of a request that passed `limit`, counted by its scope."""
    RATE_LIMIT_REFUSALS.labels(limit=limit.scope).inc()
    return RateLimited(retry_after=retry_after)
