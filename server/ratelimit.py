"""Fixed-window rate limits kept in the database, so all workers and hosts share one count.

Bucket names are keyed hashes: a canonical email address never rests in this table in plain form.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from protocol.split_secret import keyed_hash
from server.errors import RateLimited
from server.metrics import RATE_LIMIT_REFUSALS
from server.settings import Settings
from server.storage.rate_limit_records import Turn, Window


class RateLimitStore(Protocol):
    """Where the counts are kept (server/storage/ratelimit.py)."""

    async def count(self, *, bucket: str, window: Window) -> int:
        """Count one hit of `bucket` in `window`; the window's hits, this one included."""
        ...

    async def count_in_turn(
        self, *, turns: Sequence[Turn], window: Window
    ) -> tuple[int | None, ...]:
        """Count each bucket of `turns` in order as one unit, only while the one before it is
        within its limit; the hits of each, None for one not counted."""
        ...


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


@dataclass(frozen=True, slots=True)
class Limit:
    """At most `limit` requests per window for `subject` within `scope`."""

    scope: str
    subject: str
    limit: int


def start_limits(settings: Settings, *, client_ip: str) -> tuple[Limit, Limit]:
    """A start's `start-ip` and `start-net` (SPEC.md §6.11). One subscriber holds many clients
    (/64s) but one network, so the network bounds the starts of all of them, and is what
    counts towards an address's cap."""
    client = rate_limit_client(client_ip, ipv6_prefix=settings.rate_limit_ipv6_prefix)
    network = rate_limit_client(client_ip, ipv6_prefix=settings.rate_limit_ipv6_network_prefix)
    return (
        Limit("start-ip", client, settings.rate_limit_start_per_ip),
        Limit("start-net", network, settings.rate_limit_start_per_network),
    )


def address_limits(
    settings: Settings, *, client_ip: str, email_canonical: str, jkt: str
) -> tuple[Limit, Limit, Limit]:
    """A start's `start-email-key`, `start-email-client` and `start-email` (SPEC.md §6.11)."""
    network = rate_limit_client(client_ip, ipv6_prefix=settings.rate_limit_ipv6_network_prefix)
    return (
        Limit(
            "start-email-key", pair(email_canonical, jkt), settings.rate_limit_start_per_email_key
        ),
        Limit(
            "start-email-client",
            pair(email_canonical, network),
            settings.rate_limit_start_per_email_client,
        ),
        Limit("start-email", email_canonical, settings.rate_limit_start_per_email),
    )


def completion_limit(settings: Settings, *, client_ip: str) -> Limit:
    """A completion's `complete-ip` (SPEC.md §6.11)."""
    client = rate_limit_client(client_ip, ipv6_prefix=settings.rate_limit_ipv6_prefix)
    return Limit("complete-ip", client, settings.rate_limit_complete_per_ip)


@dataclass(frozen=True, slots=True)
class Counts:
    """What limits counted in turn found: the window's hits of each limit, in order, None for a
    limit not counted because one before it was over."""

    limits: tuple[Limit, ...]
    hits: tuple[int | None, ...]
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


@dataclass(frozen=True, slots=True)
class InTurn:
    """Limits to count in turn, as the store counts them: their buckets and the window."""

    limits: tuple[Limit, ...]
    turns: tuple[Turn, ...]
    window: Window
    retry_after: int

    def counted(self, hits: tuple[int | None, ...]) -> Counts:
        return Counts(limits=self.limits, hits=hits, retry_after=self.retry_after)


class RateLimiter:
    def __init__(self, store: RateLimitStore, *, hmac_key: bytes, window: int) -> None:
        self._store = store
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

    def _window_of(self, now: int) -> tuple[Window, int]:
        """The current window, and the seconds until the next one."""
        window_start = now - now % self._window
        expires_at = window_start + self._window
        return Window(start=window_start, expires_at=expires_at), expires_at - now

    async def hit(self, limit: Limit, *, now: int) -> None:
        """Count one request; raise RateLimited once the window's count passes the limit."""
        window, retry_after = self._window_of(now)
        hits = await self._store.count(
            bucket=self.bucket(limit.scope, limit.subject), window=window
        )
        if hits > limit.limit:
            raise _refused(limit, retry_after)

    def in_turn(self, limits: Sequence[Limit], *, now: int) -> InTurn:
        """`limits` to count in turn at `now`, for a store that counts them with other work
        (the login start reads the account with its counts)."""
        window, retry_after = self._window_of(now)
        turns = tuple(
            Turn(bucket=self.bucket(lim.scope, lim.subject), limit=lim.limit) for lim in limits
        )
        return InTurn(limits=tuple(limits), turns=turns, window=window, retry_after=retry_after)

    async def hit_in_turn(self, limits: Sequence[Limit], *, now: int) -> Counts:
        """Count `limits` in turn as one unit, each only while the one before it is within its
        limit: a client refused by one (its IP address) cannot go on using up the later ones
        (an email address's buckets, which would lock its owner out). One statement on
        PostgreSQL, one write transaction on SQLite. Nothing is refused here: the caller says
        which limits bind (`Counts.require`)."""
        turn = self.in_turn(limits, now=now)
        return turn.counted(await self._store.count_in_turn(turns=turn.turns, window=turn.window))


def _refused(limit: Limit, retry_after: int) -> RateLimited:
    """The refusal of a request that passed `limit`, counted by its scope."""
    RATE_LIMIT_REFUSALS.labels(limit=limit.scope).inc()
    return RateLimited(retry_after=retry_after)
