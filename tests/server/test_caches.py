"""The per-process caches of the resource path stay within their configured size, least recently
used out, and a size of 0 turns them off (docs/design.md §9; memory target of the benchmarks)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support.harness import running_server

from protocol.access_token import VerifiedAccessToken
from protocol.encoding import b64url_encode
from protocol.keys import SigningKey
from server.dpop.guard import VerifiedTokenCache
from server.dpop.proof import KeyCache

pytestmark = pytest.mark.anyio

NOW = 1_000


def _verified(kid: str = "k1") -> VerifiedAccessToken:
    return VerifiedAccessToken(
        subject="u",
        session_id="s",
        jkt="j",
        jti=b64url_encode(os.urandom(12)),
        client_id="c",
        issued_at=NOW,
        expires_at=NOW + 600,
        auth_time=NOW,
        kid=kid,
    )


def test_verified_token_cache_keeps_at_most_its_size_least_recently_used_out() -> None:
    keys = {"k1": SigningKey.generate("EdDSA", random_bytes=os.urandom).public}
    cache = VerifiedTokenCache(max_entries=3)
    tokens = [f"token-{n}" for n in range(4)]
    for token in tokens[:3]:
        cache.put(token, _verified())
    assert cache.get(tokens[0], now=NOW, keys=keys) is not None  # now the most recent
    cache.put(tokens[3], _verified())
    assert cache.get(tokens[1], now=NOW, keys=keys) is None  # the least recently used went
    assert all(cache.get(t, now=NOW, keys=keys) is not None for t in (tokens[0], *tokens[2:]))


def test_a_token_cache_of_size_zero_holds_nothing() -> None:
    keys = {"k1": SigningKey.generate("EdDSA", random_bytes=os.urandom).public}
    cache = VerifiedTokenCache(max_entries=0)
    cache.put("token", _verified())
    assert cache.get("token", now=NOW, keys=keys) is None


@pytest.mark.parametrize("size", [0, 2])
def test_device_key_cache_keeps_at_most_its_size(size: int) -> None:
    cache = KeyCache(max_entries=size)
    jwks = [
        dict(SigningKey.generate("EdDSA", random_bytes=os.urandom).public.jwk) for _ in range(3)
    ]
    parsed = [cache.resolve(dict(jwk), "EdDSA") for jwk in jwks]
    assert [key.jwk for key in parsed] == jwks
    assert len(cache._keys) == min(size, 3)
    if size:
        # The two most recent stay: resolving them again returns the very same objects.
        assert cache.resolve(dict(jwks[2]), "EdDSA") is parsed[2]
        assert cache.resolve(dict(jwks[0]), "EdDSA") is not parsed[0]


async def test_cache_sizes_come_from_the_settings(tmp_path: Path) -> None:
    async with running_server(
        tmp_path, verified_token_cache_size=7, device_key_cache_size=5
    ) as server:
        guard = server.app.state.services.resource_guard
        assert guard._verified._max_entries == 7
        assert guard.dpop._keys._max_entries == 5
        device = server.device()
        tokens = await server.login(device, "a@example.com")
        assert (await server.me(device, tokens["access_token"])).status_code == 200
        assert len(guard._verified._tokens) == 1
