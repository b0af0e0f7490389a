"""Rate limits on start and completion, shared through the database (SPEC.md §6.1;
threats.md F1, F2, F3)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support.backends import database_url_for, execute, query
from support.harness import Harness, running_server

from protocol.encoding import b64url_encode
from server.errors import RateLimited
from server.ratelimit import Limit, RateLimiter
from server.storage.database import Database
from server.storage.migrate import migrate

pytestmark = pytest.mark.anyio


async def test_sixth_start_for_one_address_gets_429_with_retry_after(server: Harness) -> None:
    for _ in range(5):
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
    assert outcomes["known@example.com"] == [202, 202, 202, 202, 429, 429]
    assert outcomes["unknown@example.com"] == [202, 202, 202, 202, 202, 429]


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


async def test_on_postgres_a_start_counts_both_its_limits_and_reads_the_account_in_one_statement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_server(tmp_path, backend="postgresql") as server:
        sent = server.record_single_statements(monkeypatch)
        assert (await server.start(server.device(), "a@example.com")).status_code == 202
    assert len(sent) == 1, sent
    assert sent[0].startswith("WITH counted_first AS (INSERT INTO rate_limits"), sent
    assert "beside AS (SELECT id, email_address, disabled_at FROM users" in sent[0], sent


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
            limits = RateLimiter(db, hmac_key=b"k" * 32, window=900)
            first, second = Limit("ip", "192.0.2.1", 2), Limit("email", "a@example.com", 5)

            async def hit(pattern: str) -> list[dict[str, object]]:
                rows = await limits.hit_in_turn(
                    first, second, now=1000, beside=(_READ_BESIDE, {"bucket": pattern})
                )
                return [dict(row) for row in rows]

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
