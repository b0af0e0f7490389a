"""Rate limits on start and completion, shared through the database (SPEC.md §6.1;
threats.md F1, F2, F3)."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError
from support.backends import database_url_for, execute, query
from support.device import Device
from support.harness import Harness, running_server

from protocol.encoding import b64url_encode
from server.errors import RateLimited
from server.login import GRANT_TYPE_MAGIC_LINK
from server.ratelimit import Limit, RateLimiter, rate_limit_client
from server.settings import Settings
from server.storage.database import Database
from server.storage.migrate import migrate
from server.storage.ratelimit import DatabaseRateLimitStore, counts_in_turn

pytestmark = pytest.mark.anyio


async def test_fourth_start_for_one_address_from_one_client_gets_429_with_retry_after(
    server: Harness,
) -> None:
    for _ in range(3):
        assert (await server.start(server.device(), "a@example.com")).status_code == 202
    response = await server.start(server.device(), "A@EXAMPLE.COM")
    assert response.status_code == 429
    assert response.json()["error"] == "rate_limited"
    assert 1 <= int(response.headers["retry-after"]) <= 900
    assert (await server.start(server.device(), "b@example.com")).status_code == 202


async def test_limit_is_identical_for_known_and_unknown_addresses(server: Harness) -> None:
    await server.login(server.device(), "known@example.com")
    outcomes = {}
    for address in ("known@example.com", "unknown@example.com"):
        statuses = [(await server.start(server.device(), address)).status_code for _ in range(6)]
        outcomes[address] = statuses
    # The known address already used one start to log in.
    assert outcomes["known@example.com"] == [202, 202, 429, 429, 429, 429]
    assert outcomes["unknown@example.com"] == [202, 202, 202, 429, 429, 429]


async def test_window_resets_after_it_passes(server: Harness) -> None:
    for _ in range(6):
        await server.start(server.device(), "a@example.com")
    server.clock.advance(900)
    assert (await server.start(server.device(), "a@example.com")).status_code == 202


async def test_per_ip_limit_on_start(tmp_path: Path, backend: str) -> None:
    async with running_server(tmp_path, backend=backend, rate_limit_start_per_ip=3) as server:
        statuses = [
            (await server.start(server.device(), f"u{i}@example.com")).status_code for i in range(4)
        ]
        assert statuses == [202, 202, 202, 429]


async def test_per_ip_limit_on_completion(tmp_path: Path, backend: str) -> None:
    async with running_server(tmp_path, backend=backend, rate_limit_complete_per_ip=2) as server:
        device = server.device()
        started, _ = await server.start_and_read_link(device, "a@example.com")
        statuses = []
        for _ in range(3):
            response = await server.complete(
                device,
                attempt_id=started["attempt_id"],
                device_half=started["device_half"],
                email_half=b64url_encode(os.urandom(32)),
            )
            statuses.append(response.status_code)
        assert statuses == [400, 400, 429]


async def test_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy(
    tmp_path: Path, backend: str
) -> None:
    async with running_server(tmp_path, backend=backend, rate_limit_start_per_ip=1) as server:
        # The peer (203.0.113.7) is not trusted: spoofed headers do not buy new buckets.
        first = await server.start(
            server.device(), "a@example.com", headers={"X-Forwarded-For": "198.51.100.1"}
        )
        second = await server.start(
            server.device(), "b@example.com", headers={"X-Forwarded-For": "198.51.100.2"}
        )
        assert (first.status_code, second.status_code) == (202, 429)


async def test_trusted_proxy_forwards_the_client_address(tmp_path: Path, backend: str) -> None:
    async with running_server(
        tmp_path, backend=backend, rate_limit_start_per_ip=1, trusted_proxies=["203.0.113.0/24"]
    ) as server:
        statuses = []
        for client in ("198.51.100.1", "198.51.100.2", "198.51.100.2"):
            response = await server.start(
                server.device(),
                f"{client}@example.com".replace(".", "-", 3),
                headers={"X-Forwarded-For": f"{client}, 203.0.113.9"},
            )
            statuses.append(response.status_code)
        assert statuses == [202, 202, 429]


def _hits(server: Harness, scope: str) -> list[int]:
    rows = server.query(
        "SELECT hits FROM rate_limits WHERE bucket LIKE ? ORDER BY window_start", f"{scope}:%"
    )
    return [int(hits) for (hits,) in rows]


async def test_a_client_over_its_ip_limit_no_longer_counts_against_the_address(
    tmp_path: Path, backend: str
) -> None:
    # Else a client refused for its address could go on filling the address's bucket and lock
    # its owner out (SPEC.md §6.1 step 5).
    async with running_server(
        tmp_path, backend=backend, rate_limit_start_per_ip=2, rate_limit_start_per_email=5
    ) as server:
        statuses = [
            (await server.start(server.device(), "victim@example.com")).status_code
            for _ in range(4)
        ]
        assert statuses == [202, 202, 429, 429]
        assert _hits(server, "start-ip") == [4]
        assert _hits(server, "start-email") == [2]


async def test_a_start_with_a_refused_address_still_counts_against_its_ip(
    tmp_path: Path, backend: str
) -> None:
    async with running_server(tmp_path, backend=backend, rate_limit_start_per_ip=2) as server:
        statuses = [
            (await server.start(server.device(), email)).status_code
            for email in ("not an address", "a@example.com", "b@example.com")
        ]
        assert statuses == [400, 202, 429]
        assert _hits(server, "start-ip") == [3]
        assert _hits(server, "start-email") == [1]


async def test_on_postgres_a_start_counts_its_limits_and_reads_the_account_in_one_statement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_server(tmp_path, backend="postgresql") as server:
        sent = server.record_single_statements(monkeypatch)
        assert (await server.start(server.device(), "a@example.com")).status_code == 202
    assert len(sent) == 1, sent
    assert sent[0].startswith("WITH counted_1 AS (INSERT INTO rate_limits"), sent
    assert "beside AS (SELECT u.id, u.email_address, u.disabled_at, EXISTS" in sent[0], sent


_READ_BESIDE = "SELECT bucket, hits FROM rate_limits WHERE bucket LIKE :bucket ORDER BY bucket"


async def test_a_read_beside_the_counts_is_answered_with_them_with_its_own_parameters(
    tmp_path: Path, backend: str
) -> None:
    # The read's `:bucket` is not the count's; the read sees the table as it was before the
    # counts (on SQLite it runs after them and would see them: hence the pattern "seen%").
    with database_url_for(backend, tmp_path) as url:
        migrate(url)
        execute(url, "INSERT INTO rate_limits VALUES ('seen-1', 0, 7, 0), ('seen-2', 0, 8, 0)")
        db = Database(url)
        await db.connect()
        try:
            limits = RateLimiter(DatabaseRateLimitStore(db), hmac_key=b"k" * 32, window=900)
            first, second = Limit("ip", "192.0.2.1", 2), Limit("email", "a@example.com", 5)

            async def hit(pattern: str) -> list[dict[str, object]]:
                in_turn = limits.in_turn((first, second), now=1000)
                hits, read = await counts_in_turn(
                    db,
                    turns=in_turn.turns,
                    window=in_turn.window,
                    beside=(_READ_BESIDE, {"bucket": pattern}),
                )
                in_turn.counted(hits).require(first, second)
                return [dict(row) for row in read]

            assert await hit("seen%") == [
                {"bucket": "seen-1", "hits": 7},
                {"bucket": "seen-2", "hits": 8},
            ]
            assert await hit("nothing%") == []
            with pytest.raises(RateLimited):
                await hit("seen%")
        finally:
            await db.disconnect()
        counted = query(url, "SELECT hits FROM rate_limits WHERE bucket NOT LIKE ?", "seen%")
        assert sorted(hits for (hits,) in counted) == [2, 3]


async def test_each_limit_is_counted_only_while_the_one_before_it_is_within(
    tmp_path: Path, backend: str
) -> None:
    with database_url_for(backend, tmp_path) as url:
        migrate(url)
        db = Database(url)
        await db.connect()
        try:
            limits = RateLimiter(DatabaseRateLimitStore(db), hmac_key=b"k" * 32, window=900)
            chain = (Limit("a", "x", 3), Limit("b", "x", 1), Limit("c", "x", 5))
            seen = []
            for _ in range(4):
                counts = await limits.hit_in_turn(chain, now=1000)
                seen.append((counts.hits, [counts.within(limit) for limit in chain]))
        finally:
            await db.disconnect()
    assert seen == [
        ((1, 1, 1), [True, True, True]),
        ((2, 2, None), [True, False, False]),
        ((3, 3, None), [True, False, False]),
        ((4, None, None), [False, False, False]),
    ]


# --- Starts that a stranger cannot use to lock an owner out (SPEC.md §2.2 (g), (h); §6.11) ------

# The harness's peer (203.0.113.7) is a trusted proxy here, so each request names its client.
_PROXY = "203.0.113.0/24"
_OWNER_IP = "192.0.2.10"
_CAP = 10  # rate_limit_start_per_email, the default
_PER_CLIENT = 3  # rate_limit_start_per_email_client, the default
_PER_KEY = 3  # rate_limit_start_per_email_key, the default


async def _start_from(
    server: Harness, client: str, email: str, device: Device | None = None
) -> int:
    response = await server.start(
        device or server.device(), email, headers={"X-Forwarded-For": client}
    )
    return response.status_code


def _login_links_to(server: Harness, address: str) -> int:
    rows = server.query(
        "SELECT count(*) FROM outbox WHERE kind = 'login_link' AND recipient = ?", address
    )
    return int(rows[0][0])


async def test_a_stranger_on_one_ip_with_fresh_keys_cannot_lock_the_owner_out(
    tmp_path: Path, backend: str
) -> None:
    async with running_server(tmp_path, backend=backend, trusted_proxies=[_PROXY]) as server:
        stranger = [
            await _start_from(server, "198.51.100.66", "victim@example.com") for _ in range(20)
        ]
        assert stranger == [202] * _PER_CLIENT + [429] * (20 - _PER_CLIENT)
        # The owner's new device, from its own address, in the same window.
        owner = server.device()
        assert await _start_from(server, _OWNER_IP, "victim@example.com", owner) == 202
        assert _login_links_to(server, "victim@example.com") == _PER_CLIENT + 1


async def test_a_stranger_on_many_ips_cannot_lock_out_an_owner_whose_key_holds_a_session(
    tmp_path: Path, backend: str
) -> None:
    async with running_server(tmp_path, backend=backend, trusted_proxies=[_PROXY]) as server:
        owner = server.device()
        await server.login(owner, "victim@example.com")
        # Fresh keys from 40 addresses: the cap of the address is used up.
        stranger = [
            await _start_from(server, f"198.51.100.{n}", "victim@example.com") for n in range(40)
        ]
        assert stranger.count(202) == _CAP - 1  # the owner's login used one start
        assert set(stranger[_CAP - 1 :]) == {429}
        # The owner's key still starts and is still mailed, within the bucket of its own key
        # (the login above used one of its starts).
        links = _login_links_to(server, "victim@example.com")
        owner_starts = [
            await _start_from(server, _OWNER_IP, "victim@example.com", owner) for _ in range(4)
        ]
        assert owner_starts == [202] * (_PER_KEY - 1) + [429] * (4 - _PER_KEY + 1)
        assert _login_links_to(server, "victim@example.com") == links + _PER_KEY - 1
        # A new device of the owner, with no session yet, waits for the next window.
        new_device = server.device()
        assert await _start_from(server, _OWNER_IP, "victim@example.com", new_device) == 429
        server.clock.advance(900)
        assert await _start_from(server, _OWNER_IP, "victim@example.com", new_device) == 202


async def test_a_key_with_a_session_starts_when_a_stranger_on_its_client_filled_the_address(
    tmp_path: Path, backend: str
) -> None:
    # Behind one NAT, a stranger uses up the address's starts from the owner's client; only the
    # client's own start-ip bucket, shared with the stranger, still binds the owner's key.
    async with running_server(tmp_path, backend=backend, trusted_proxies=[_PROXY]) as server:
        owner = server.device()
        await server.login(owner, "victim@example.com")
        stranger = [await _start_from(server, _OWNER_IP, "victim@example.com") for _ in range(5)]
        assert stranger == [202] * _PER_CLIENT + [429] * (5 - _PER_CLIENT)
        assert await _start_from(server, _OWNER_IP, "victim@example.com", owner) == 202
        assert await _start_from(server, _OWNER_IP, "victim@example.com") == 429


async def test_an_ended_session_does_not_let_its_key_past_the_cap(
    tmp_path: Path, backend: str
) -> None:
    async with running_server(tmp_path, backend=backend, trusted_proxies=[_PROXY]) as server:
        owner = server.device()
        tokens = await server.login(owner, "victim@example.com")
        revoked = await server.client.post(
            "/oauth2/revoke", data={"token": tokens["refresh_token"]}
        )
        assert revoked.status_code == 200
        for n in range(40):
            await _start_from(server, f"198.51.100.{n}", "victim@example.com")
        assert await _start_from(server, _OWNER_IP, "victim@example.com", owner) == 429


async def test_a_key_with_a_session_of_another_account_gets_no_way_past_the_cap(
    tmp_path: Path, backend: str
) -> None:
    # The exception is for the account's own keys: a stranger's key signed in to the
    # stranger's account is a stranger's key for the victim's address, and the answer for an
    # address with an account and one without stays the same (SPEC.md §6.1; threats.md F3, F4).
    async with running_server(tmp_path, backend=backend, trusted_proxies=[_PROXY]) as server:
        await server.login(server.device(), "victim@example.com")
        stranger = server.device()
        await server.login(stranger, "stranger@example.com")
        outcomes = {}
        for address in ("victim@example.com", "nobody@example.com"):
            for n in range(40):
                await _start_from(server, f"198.51.100.{n}", address)
            outcomes[address] = await _start_from(server, _OWNER_IP, address, stranger)
        assert outcomes == {"victim@example.com": 429, "nobody@example.com": 429}


async def test_mail_to_one_address_per_window_never_exceeds_the_cap(
    tmp_path: Path, backend: str
) -> None:
    async with running_server(tmp_path, backend=backend, trusted_proxies=[_PROXY]) as server:
        address = "victim@example.com"
        for window in range(2):
            # Fresh keys from one address, one key from many, fresh keys from many.
            for _ in range(10):
                await _start_from(server, "198.51.100.1", address)
            one_key = server.device()
            for n in range(10):
                await _start_from(server, f"198.51.100.{100 + n}", address, one_key)
            for n in range(40):
                await _start_from(server, f"192.0.2.{100 + n}", address)
            assert _login_links_to(server, address) == _CAP * (window + 1)
            server.clock.advance(900)


async def test_one_ip_reaches_a_bounded_number_of_starts_and_fills_no_address_cap(
    tmp_path: Path, backend: str
) -> None:
    async with running_server(tmp_path, backend=backend, trusted_proxies=[_PROXY]) as server:
        admitted: dict[str, int] = {}
        for n in range(12):
            address = f"u{n}@example.com"
            statuses = [await _start_from(server, "198.51.100.1", address) for _ in range(4)]
            admitted[address] = statuses.count(202)
        # 30 starts from one client in a window (rate_limit_start_per_ip), at most three of
        # them for one address: 7 addresses get three, the eighth the two that are left.
        assert sum(admitted.values()) == 23
        assert max(admitted.values()) == _PER_CLIENT
        for address in admitted:
            assert await _start_from(server, _OWNER_IP, address) == 202


# --- The client of the per-IP limits (SPEC.md §6.11) ---------------------------------------------


async def test_starts_from_one_ipv6_64_are_limited_like_one_address(
    tmp_path: Path, backend: str
) -> None:
    async with running_server(tmp_path, backend=backend, trusted_proxies=[_PROXY]) as server:
        statuses = [
            await _start_from(server, f"2001:db8:1:2::{n:x}", f"u{n}@example.com")
            for n in range(1, 41)
        ]
        assert statuses == [202] * 30 + [429] * 10
        # Another /64 is another client.
        assert await _start_from(server, "2001:db8:1:3::1", "other@example.com") == 202


async def test_completions_from_one_ipv6_64_are_limited_like_one_address(
    tmp_path: Path, backend: str
) -> None:
    async with running_server(
        tmp_path, backend=backend, trusted_proxies=[_PROXY], rate_limit_complete_per_ip=2
    ) as server:
        device = server.device()
        started, _ = await server.start_and_read_link(device, "a@example.com")
        statuses = []
        for n in range(1, 4):
            response = await server.client.post(
                "/oauth2/token",
                data={
                    "grant_type": GRANT_TYPE_MAGIC_LINK,
                    "attempt_id": started["attempt_id"],
                    "device_half": started["device_half"],
                    "email_half": b64url_encode(os.urandom(32)),
                },
                headers={
                    "DPoP": device.proof("POST", "/oauth2/token"),
                    "X-Forwarded-For": f"2001:db8:1:2:{n:x}::1",
                },
            )
            statuses.append(response.status_code)
        assert statuses == [400, 400, 429]


async def test_an_ipv4_mapped_address_shares_the_bucket_of_its_ipv4_address(
    tmp_path: Path, backend: str
) -> None:
    async with running_server(
        tmp_path, backend=backend, trusted_proxies=[_PROXY], rate_limit_start_per_ip=1
    ) as server:
        first = await _start_from(server, "::ffff:192.0.2.1", "a@example.com")
        second = await _start_from(server, "192.0.2.1", "b@example.com")
        assert (first, second) == (202, 429)


async def test_a_48_prefix_setting_groups_ipv6_clients_wider(tmp_path: Path, backend: str) -> None:
    for prefix, expected in ((64, (202, 202)), (48, (202, 429))):
        (tmp_path / str(prefix)).mkdir()
        async with running_server(
            tmp_path / str(prefix),
            backend=backend,
            trusted_proxies=[_PROXY],
            rate_limit_start_per_ip=1,
            rate_limit_ipv6_prefix=prefix,
        ) as server:
            first = await _start_from(server, "2001:db8:1:2::1", "a@example.com")
            second = await _start_from(server, "2001:db8:1:3::1", "b@example.com")
            assert (first, second) == expected


async def test_a_trusted_proxy_seen_as_an_ipv4_mapped_peer_still_forwards_the_client(
    tmp_path: Path,
) -> None:
    # A dual-stack listener reports an IPv4 peer as ::ffff:a.b.c.d; the proxy is trusted all
    # the same, or every client behind it would share its bucket.
    async with running_server(
        tmp_path, trusted_proxies=[_PROXY], rate_limit_start_per_ip=1
    ) as server:
        transport = httpx.ASGITransport(app=server.app, client=("::ffff:203.0.113.9", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as proxy:
            statuses = []
            for n in (1, 2):
                response = await proxy.post(
                    "/v1/login/start",
                    json={"email": f"u{n}@example.com"},
                    headers={
                        "DPoP": server.device().proof("POST", "/v1/login/start"),
                        "X-Forwarded-For": f"198.51.100.{n}",
                    },
                )
                statuses.append(response.status_code)
        assert statuses == [202, 202]


@pytest.mark.parametrize(
    ("address", "prefix", "client"),
    [
        ("192.0.2.1", 64, "192.0.2.1"),
        ("::ffff:192.0.2.1", 64, "192.0.2.1"),
        ("::FFFF:c000:0201", 64, "192.0.2.1"),
        ("2001:db8:1:2:3:4:5:6", 64, "2001:db8:1:2::/64"),
        ("2001:DB8:1:2::9", 64, "2001:db8:1:2::/64"),
        ("2001:db8:1:2:3:4:5:6", 48, "2001:db8:1::/48"),
        ("2001:db8:1:2:3:4:5:6", 128, "2001:db8:1:2:3:4:5:6/128"),
        ("unknown", 64, "unknown"),
    ],
)
def test_the_client_of_a_rate_limit_is_the_ipv4_address_or_the_ipv6_prefix(
    address: str, prefix: int, client: str
) -> None:
    assert rate_limit_client(address, ipv6_prefix=prefix) == client


@pytest.mark.parametrize("prefix", [31, 129])
def test_an_ipv6_prefix_outside_32_to_128_is_refused(prefix: int) -> None:
    with pytest.raises(ValidationError, match="rate_limit_ipv6_prefix"):
        Settings(rate_limit_ipv6_prefix=prefix)


# --- The network of a client: one subscriber's allocation (SPEC.md §2.2 (g), (h); §6.11) --------


async def test_a_stranger_on_four_64s_of_one_48_cannot_lock_out_the_owners_new_device(
    tmp_path: Path, backend: str
) -> None:
    # One subscriber is given a /48 (or a /56): its /64s are one network, so together they
    # count as one client towards the address's cap.
    async with running_server(tmp_path, backend=backend, trusted_proxies=[_PROXY]) as server:
        stranger = [
            await _start_from(server, f"2001:db8:aa:{n}::1", "victim@example.com")
            for n in range(4)
            for _ in range(3)
        ]
        assert stranger == [202] * _PER_CLIENT + [429] * (12 - _PER_CLIENT)
        # The owner's new device, with no session yet, from its own address.
        owner = server.device()
        assert await _start_from(server, _OWNER_IP, "victim@example.com", owner) == 202
        assert _login_links_to(server, "victim@example.com") == _PER_CLIENT + 1


async def test_one_48_is_bounded_by_its_network_across_many_64s_and_addresses(
    tmp_path: Path, backend: str
) -> None:
    per_network = 6
    async with running_server(
        tmp_path,
        backend=backend,
        trusted_proxies=[_PROXY],
        rate_limit_start_per_network=per_network,
    ) as server:
        statuses = [
            await _start_from(server, f"2001:db8:bb:{n:x}::{m}", f"u{n}-{m}@example.com")
            for n in range(1, 9)
            for m in range(1, 3)
        ]
        assert statuses == [202] * per_network + [429] * (16 - per_network)
        mailed = server.query("SELECT count(*) FROM outbox WHERE kind = 'login_link'")
        assert int(mailed[0][0]) == per_network
        # A start refused for its input counts against the network as well.
        assert await _start_from(server, "2001:db8:bb:ff::1", "not an address") == 429
        assert _hits(server, "start-net") == [17]
        # Another /48 is another network; the next window is a new one.
        assert await _start_from(server, "2001:db8:cc::1", "other@example.com") == 202
        server.clock.advance(900)
        assert await _start_from(server, "2001:db8:bb:1::1", "later@example.com") == 202


@pytest.mark.parametrize(
    "embedding",
    [
        pytest.param("::ffff:192.0.2.1", id="ipv4-mapped"),
        pytest.param("2002:c000:201::1", id="6to4"),
        pytest.param("2002:c000:201:ffff::9", id="6to4-another-64"),
        pytest.param("64:ff9b::c000:201", id="nat64"),
        pytest.param("2001:0:4136:e378:8000:63bf:3fff:fdfe", id="teredo"),
    ],
)
async def test_an_address_that_embeds_an_ipv4_address_shares_its_buckets(
    tmp_path: Path, backend: str, embedding: str
) -> None:
    async with running_server(
        tmp_path, backend=backend, trusted_proxies=[_PROXY], rate_limit_start_per_ip=2
    ) as server:
        statuses = [
            await _start_from(server, "192.0.2.1", "a@example.com"),
            await _start_from(server, embedding, "a@example.com"),
            await _start_from(server, embedding, "b@example.com"),
        ]
        assert statuses == [202, 202, 429]
        assert _hits(server, "start-email-client") == [2]
        assert await _start_from(server, "192.0.2.2", "c@example.com") == 202


@pytest.mark.parametrize(
    ("address", "prefix", "counted_as"),
    [
        ("2002:c000:201::1", 64, "192.0.2.1"),
        ("2002:C000:0201:abcd:1:2:3:4", 48, "192.0.2.1"),
        ("64:ff9b::192.0.2.1", 64, "192.0.2.1"),
        ("64:ff9b::c000:201", 48, "192.0.2.1"),
        ("2001:0:4136:e378:8000:63bf:3fff:fdfe", 64, "192.0.2.1"),
        ("2001:db8:aa:1:2:3:4:5", 48, "2001:db8:aa::/48"),
        ("2001:db8:aa:1:2:3:4:5", 56, "2001:db8:aa::/56"),
        ("2001:db8:aa:ff01::1", 56, "2001:db8:aa:ff00::/56"),
        ("64:ff9b:1::c000:201", 48, "64:ff9b:1::/48"),
    ],
)
def test_an_ipv6_address_that_embeds_an_ipv4_address_is_counted_as_it(
    address: str, prefix: int, counted_as: str
) -> None:
    assert rate_limit_client(address, ipv6_prefix=prefix) == counted_as


@pytest.mark.parametrize(
    ("network_prefix", "client_prefix"), [(16, 32), (48, 48), (56, 64), (64, 64), (48, 128)]
)
def test_a_network_prefix_from_16_to_the_client_prefix_is_accepted(
    network_prefix: int, client_prefix: int
) -> None:
    settings = Settings(
        rate_limit_ipv6_network_prefix=network_prefix, rate_limit_ipv6_prefix=client_prefix
    )
    assert settings.rate_limit_ipv6_network_prefix == network_prefix


@pytest.mark.parametrize(
    ("network_prefix", "client_prefix", "reason"),
    [
        (15, 64, "greater than or equal to 16"),
        (65, 128, "less than or equal to 64"),
        (56, 48, "cannot be longer than rate_limit_ipv6_prefix"),
        (48, 32, "cannot be longer than rate_limit_ipv6_prefix"),
    ],
)
def test_a_network_prefix_outside_16_to_64_or_longer_than_the_client_prefix_is_refused(
    network_prefix: int, client_prefix: int, reason: str
) -> None:
    with pytest.raises(ValidationError, match=reason):
        Settings(
            rate_limit_ipv6_network_prefix=network_prefix, rate_limit_ipv6_prefix=client_prefix
        )


def test_starts_per_network_default_to_120_and_at_least_one() -> None:
    assert Settings().rate_limit_start_per_network == 120
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        Settings(rate_limit_start_per_network=0)
