"""Signing-key rotation: both keys are published (public parts only), new tokens carry the new
`kid`, old tokens verify until the old key retires, and a worker that meets an unknown `kid`
reloads its keys once (threats.md A11; SPEC.md §6.3)."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pytest
from support.harness import Harness

import server.signing_keys as signing_keys
from protocol.access_token import issue_access_token
from protocol.encoding import b64url_encode
from protocol.keys import SigningKey, parse_public_jwk
from server.signing_keys import ServerKeys, load_key_set, rotate_signing_key
from server.storage.signing_keys import SigningKeyStore

if TYPE_CHECKING:
    from conftest import Ops, SignedIn

pytestmark = pytest.mark.anyio

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "k", "oth"}


async def _rotate(server: Harness, *, retire_after: int, reload: bool = True) -> str:
    svc = server.app.state.services
    kid = await rotate_signing_key(
        SigningKeyStore(svc.db),
        svc.keyring,
        clock=server.clock,
        random_bytes=os.urandom,
        retire_after=retire_after,
    )
    if reload:
        assert await svc.keys.reload(force=True)
    return kid


async def _jwks(server: Harness) -> list[dict[str, Any]]:
    response = await server.client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    keys: list[dict[str, Any]] = response.json()["keys"]
    return keys


def _cli_retire_after(server: Harness) -> int:
    """What `splitlink keys rotate` uses (server/cli/keys.py)."""
    return server.settings.access_token_lifetime + 60


@pytest.fixture
async def signed_in(ops: Ops) -> SignedIn:
    return await ops.sign_in()


async def test_a11_after_rotation_the_jwks_has_both_keys_and_no_private_part(
    server: Harness, signed_in: SignedIn
) -> None:
    (old,) = await _jwks(server)
    new_kid = await _rotate(server, retire_after=_cli_retire_after(server))
    keys = await _jwks(server)
    assert sorted(k["kid"] for k in keys) == sorted([old["kid"], new_kid])
    for jwk in keys:
        assert not PRIVATE_MEMBERS & set(jwk), jwk
        assert jwk["alg"] == "EdDSA" and jwk["use"] == "sig"
        public = parse_public_jwk({k: v for k, v in jwk.items() if k not in ("kid", "use")})
        assert public.thumbprint == jwk["kid"]


async def test_a11_new_tokens_carry_the_new_kid(
    server: Harness, ops: Ops, signed_in: SignedIn
) -> None:
    old_kid = ops.header(signed_in.access_token)["kid"]
    new_kid = await _rotate(server, retire_after=_cli_retire_after(server))
    assert new_kid != old_kid
    refreshed = await ops.refresh(signed_in.device, signed_in.refresh_token)
    assert refreshed.status_code == 200
    assert ops.header(refreshed.json()["access_token"])["kid"] == new_kid
    assert (await server.me(signed_in.device, refreshed.json()["access_token"])).status_code == 200
    other = await ops.sign_in("b@example.com")
    assert ops.header(other.access_token)["kid"] == new_kid


async def test_a11_an_old_token_verifies_until_it_expires_with_the_cli_retirement(
    server: Harness, signed_in: SignedIn
) -> None:
    await _rotate(server, retire_after=_cli_retire_after(server))
    server.clock.advance(server.settings.access_token_lifetime - 1)
    await server.app.state.services.keys.reload(force=True)
    response = await server.me(signed_in.device, signed_in.access_token)
    assert response.status_code == 200, response.text


@pytest.fixture
async def long_lived(ops: Ops, server: Harness) -> SignedIn:
    assert server.settings.access_token_lifetime == 3600
    return await ops.sign_in()


@pytest.mark.parametrize("server_overrides", [{"access_token_lifetime": 3600}], indirect=True)
async def test_a11_an_old_token_is_refused_once_its_key_retired(
    server: Harness, ops: Ops, long_lived: SignedIn
) -> None:
    """Tokens live an hour here, the old key only 600 s more: after retirement, the still
    unexpired token signed by it is refused (the refusal is the key's, not the expiry's)."""
    old_kid = ops.header(long_lived.access_token)["kid"]
    new_kid = await _rotate(server, retire_after=600)
    # The old key verifies for [rotation, rotation + retire_after).
    server.clock.advance(599)
    await server.app.state.services.keys.reload(force=True)
    assert (await server.me(long_lived.device, long_lived.access_token)).status_code == 200
    assert {k["kid"] for k in await _jwks(server)} == {old_kid, new_kid}
    server.clock.advance(1)
    await server.app.state.services.keys.reload(force=True)
    assert ops.claims(long_lived.access_token)["exp"] > server.clock.now()
    response = await server.me(long_lived.device, long_lived.access_token)
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert [k["kid"] for k in await _jwks(server)] == [new_kid]
    # The session itself is fine: a refresh gets a token signed by the new key.
    refreshed = await ops.refresh(long_lived.device, long_lived.refresh_token)
    assert refreshed.status_code == 200
    assert ops.header(refreshed.json()["access_token"])["kid"] == new_kid
    assert (await server.me(long_lived.device, refreshed.json()["access_token"])).status_code == 200


def _count_loads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the key loads a worker makes (ServerKeys.reload calls load_key_set)."""
    calls: list[int] = []
    real: Callable[..., Awaitable[Any]] = signing_keys.load_key_set

    async def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return await real(*args, **kwargs)

    monkeypatch.setattr(signing_keys, "load_key_set", counting)
    return calls


def _token_like(ops: Ops, like: str, *, key: SigningKey, kid: str) -> str:
    claims = ops.claims(like)
    return issue_access_token(
        key=key,
        kid=kid,
        issuer=claims["iss"],
        audience=claims["aud"],
        subject=claims["sub"],
        client_id=claims["client_id"],
        session_id=claims["sid"],
        jkt=claims["cnf"]["jkt"],
        jti=b64url_encode(os.urandom(16)),
        issued_at=ops.server.clock.now(),
        lifetime=600,
        auth_time=claims["auth_time"],
    )


async def test_a11_a_kid_unknown_to_this_worker_triggers_one_reload(
    server: Harness, ops: Ops, signed_in: SignedIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another worker (a second ServerKeys) rotated and signs; this worker has not reloaded."""
    svc = server.app.state.services
    await _rotate(server, retire_after=_cli_retire_after(server), reload=False)
    other_worker = await ServerKeys.load(SigningKeyStore(svc.db), svc.keyring, clock=server.clock)
    new = other_worker.key_set.current
    assert new.kid not in svc.keys.verification_keys()
    assert (
        new.kid
        == (
            await load_key_set(SigningKeyStore(svc.db), svc.keyring, now=server.clock.now())
        ).current.kid
    )
    token = _token_like(ops, signed_in.access_token, key=new.key, kid=new.kid)
    # The harness loaded its keys a moment ago; let the minimum reload interval pass.
    monkeypatch.setattr(signing_keys, "MIN_RELOAD_INTERVAL", 0.0)
    loads = _count_loads(monkeypatch)
    response = await server.me(signed_in.device, token)
    assert response.status_code == 200, response.text
    assert len(loads) == 1
    assert new.kid in svc.keys.verification_keys()
    # Known now: no further reload.
    again = await server.me(signed_in.device, token)
    assert again.status_code == 200
    assert len(loads) == 1


async def test_a11_a_kid_unknown_everywhere_reloads_once_then_is_refused(
    server: Harness, ops: Ops, signed_in: SignedIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(signing_keys, "MIN_RELOAD_INTERVAL", 0.0)
    loads = _count_loads(monkeypatch)
    stranger = SigningKey.generate("EdDSA", random_bytes=os.urandom)
    token = _token_like(ops, signed_in.access_token, key=stranger, kid=stranger.public.thumbprint)
    response = await server.me(signed_in.device, token)
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert len(loads) == 1


async def test_a11_a_flood_of_unknown_kids_reloads_at_most_once_per_interval(
    server: Harness, ops: Ops, signed_in: SignedIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads = _count_loads(monkeypatch)
    for _ in range(20):
        stranger = SigningKey.generate("EdDSA", random_bytes=os.urandom)
        token = _token_like(
            ops, signed_in.access_token, key=stranger, kid=stranger.public.thumbprint
        )
        assert (await server.me(signed_in.device, token)).status_code == 401
    assert len(loads) <= 1


async def test_a11_a_token_naming_a_known_kid_but_signed_by_another_key_is_refused(
    server: Harness, ops: Ops, signed_in: SignedIn
) -> None:
    kid = ops.header(signed_in.access_token)["kid"]
    stranger = SigningKey.generate("EdDSA", random_bytes=os.urandom)
    token = _token_like(ops, signed_in.access_token, key=stranger, kid=kid)
    response = await server.me(signed_in.device, token)
    assert response.status_code == 401
