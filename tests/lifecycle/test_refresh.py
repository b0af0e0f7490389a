"""The refresh grant: rotation, reuse detection, the grace window, key binding and the session's
idle and absolute ends (RFC 6749 §6, RFC 9449 §5, RFC 9700 §4.14.2; attacks.md B10, G1, G3, G4)."""

from __future__ import annotations

import pytest
from conftest import SignedIn, call, events_named, jwt_claims, refresh, sign_in
from support.harness import Harness

pytestmark = pytest.mark.anyio

GRACE = 30  # Settings.refresh_grace_period default
DAY = 24 * 60 * 60


def _refused(response: object, code: str = "invalid_grant") -> None:
    assert getattr(response, "status_code", None) == 400, getattr(response, "text", response)
    assert response.json()["error"] == code  # type: ignore[attr-defined]


def _rows(server: Harness, session_id: str) -> list[tuple[object, ...]]:
    return server.query(
        "SELECT token_hash, rotated_at, child_hash, revoked_at FROM refresh_tokens "
        "WHERE session_id = ? ORDER BY created_at, rowid",
        session_id,
    )


@pytest.fixture
async def signed_in(server: Harness) -> SignedIn:
    return await sign_in(server)


async def test_g1_refresh_rotates_and_new_access_token_works(
    server: Harness, signed_in: SignedIn
) -> None:
    device = signed_in.device
    seen = {signed_in.refresh_token}
    current = signed_in.refresh_token
    for _ in range(3):
        server.clock.advance(60)
        response = await refresh(server, device, current)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["token_type"] == "DPoP"
        assert body["expires_in"] == 600
        assert response.headers["cache-control"] == "no-store"
        assert body["refresh_token"] not in seen
        seen.add(body["refresh_token"])
        current = body["refresh_token"]
        me = await server.me(device, body["access_token"])
        assert me.status_code == 200, me.text
    assert len(seen) == 4


async def test_g1_rotated_token_is_unusable_after_the_grace_window(
    server: Harness, signed_in: SignedIn
) -> None:
    device = signed_in.device
    first = await refresh(server, device, signed_in.refresh_token)
    assert first.status_code == 200
    server.clock.advance(GRACE + 1)
    _refused(await refresh(server, device, signed_in.refresh_token))


async def test_g1_reuse_after_grace_revokes_the_whole_session_at_once(
    server: Harness, signed_in: SignedIn
) -> None:
    device = signed_in.device
    tokens = [signed_in.refresh_token]
    access = signed_in.access_token
    for _ in range(3):
        response = await refresh(server, device, tokens[-1])
        assert response.status_code == 200
        tokens.append(response.json()["refresh_token"])
        access = response.json()["access_token"]
        server.clock.advance(10)
    rotated_at = server.clock.now() - 10
    session_id = jwt_claims(access)["sid"]
    # rotated_at + grace + 1 for the first token (rotated earliest, so far outside the window).
    server.clock.current = rotated_at + GRACE + 1
    _refused(await refresh(server, device, tokens[0]))
    # At once: the newest refresh token and the newest access token are refused.
    _refused(await refresh(server, device, tokens[-1]))
    me = await server.me(device, access)
    assert me.status_code == 401
    assert 'error="invalid_token"' in me.headers["www-authenticate"]
    # Every token of the family, old and new, is refused.
    for token in tokens:
        _refused(await refresh(server, device, token))
    revoked = events_named(server, "session.revoked")
    assert {"session_id": session_id, "reason": "refresh_token_reused"} in revoked
    assert any(
        e.get("reason") == "reused" and e.get("session_id") == session_id
        for e in events_named(server, "refresh.refused")
    )
    (row,) = server.query("SELECT revoked_at FROM sessions WHERE id = ?", session_id)
    assert row[0] is not None
    assert all(r[3] is not None for r in _rows(server, session_id))


async def test_g3_g4_retry_exactly_grace_seconds_after_rotation_returns_the_same_child(
    server: Harness, signed_in: SignedIn
) -> None:
    device = signed_in.device
    first = await refresh(server, device, signed_in.refresh_token)
    assert first.status_code == 200
    server.clock.advance(GRACE)
    retry = await refresh(server, device, signed_in.refresh_token)
    assert retry.status_code == 200, retry.text
    assert retry.json()["refresh_token"] == first.json()["refresh_token"]
    assert (await server.me(device, retry.json()["access_token"])).status_code == 200
    session_id = jwt_claims(signed_in.access_token)["sid"]
    # No fork: still one parent and one unrotated child.
    rows = _rows(server, session_id)
    assert len(rows) == 2
    assert [r[1] is None for r in rows] == [False, True]
    # The child still works (the retry did not use it up).
    child = await refresh(server, device, first.json()["refresh_token"])
    assert child.status_code == 200, child.text


async def test_g3_retry_grace_plus_one_seconds_after_rotation_is_reuse(
    server: Harness, signed_in: SignedIn
) -> None:
    device = signed_in.device
    first = await refresh(server, device, signed_in.refresh_token)
    assert first.status_code == 200
    server.clock.advance(GRACE + 1)
    _refused(await refresh(server, device, signed_in.refresh_token))
    # The child, never used, is revoked with the session.
    _refused(await refresh(server, device, first.json()["refresh_token"]))
    assert (await server.me(device, first.json()["access_token"])).status_code == 401
    assert events_named(server, "session.revoked")


async def test_g3_retry_within_grace_after_the_child_was_used_is_reuse(
    server: Harness, signed_in: SignedIn
) -> None:
    device = signed_in.device
    first = await refresh(server, device, signed_in.refresh_token)
    assert first.status_code == 200
    second = await refresh(server, device, first.json()["refresh_token"])
    assert second.status_code == 200
    server.clock.advance(1)  # well within the grace window of the first rotation
    _refused(await refresh(server, device, signed_in.refresh_token))
    # The newest tokens die with the session.
    _refused(await refresh(server, device, second.json()["refresh_token"]))
    assert (await server.me(device, second.json()["access_token"])).status_code == 401
    assert any(e["reason"] == "refresh_token_reused" for e in events_named(server, "session.revoked"))


async def _assert_not_rotated(server: Harness, signed_in: SignedIn) -> None:
    session_id = jwt_claims(signed_in.access_token)["sid"]
    rows = _rows(server, session_id)
    assert len(rows) == 1 and rows[0][1] is None and rows[0][3] is None, rows
    good = await refresh(server, signed_in.device, signed_in.refresh_token)
    assert good.status_code == 200, good.text


async def test_b10_refresh_without_proof_is_refused_and_rotates_nothing(
    server: Harness, signed_in: SignedIn
) -> None:
    _refused(
        await refresh(server, signed_in.device, signed_in.refresh_token, with_proof=False),
        "invalid_dpop_proof",
    )
    await _assert_not_rotated(server, signed_in)


async def test_b10_refresh_with_another_keys_proof_is_refused_and_rotates_nothing(
    server: Harness, signed_in: SignedIn
) -> None:
    thief = server.device()
    _refused(await refresh(server, thief, signed_in.refresh_token))
    # Also a proof with the victim's public key in the header but signed by the thief.
    forged = signed_in.device.proof("POST", "/oauth2/token", sign_with=thief.key)
    _refused(
        await refresh(server, thief, signed_in.refresh_token, proof=forged), "invalid_dpop_proof"
    )
    assert not events_named(server, "session.revoked")
    await _assert_not_rotated(server, signed_in)


async def test_b10_refresh_with_a_replayed_proof_is_refused_and_rotates_nothing(
    server: Harness, signed_in: SignedIn
) -> None:
    device = signed_in.device
    proof = device.proof("POST", "/oauth2/token")
    first = await refresh(server, device, signed_in.refresh_token, proof=proof)
    assert first.status_code == 200
    child = first.json()["refresh_token"]
    _refused(await refresh(server, device, child, proof=proof), "invalid_dpop_proof")
    session_id = jwt_claims(signed_in.access_token)["sid"]
    rows = _rows(server, session_id)
    assert len(rows) == 2 and rows[1][1] is None, rows
    again = await refresh(server, device, child)
    assert again.status_code == 200, again.text


@pytest.mark.parametrize(
    "claims",
    [
        pytest.param({"htu": "https://auth.example.test/v1/me"}, id="wrong-htu"),
        pytest.param({"htm": "GET"}, id="wrong-htm"),
        pytest.param({"iat": 1_000_000_000}, id="stale-iat"),
    ],
)
async def test_b10_refresh_with_a_bad_proof_is_refused_and_rotates_nothing(
    server: Harness, signed_in: SignedIn, claims: dict[str, object]
) -> None:
    proof = signed_in.device.proof("POST", "/oauth2/token", claims=claims)
    _refused(
        await refresh(server, signed_in.device, signed_in.refresh_token, proof=proof),
        "invalid_dpop_proof",
    )
    await _assert_not_rotated(server, signed_in)


@pytest.mark.parametrize("alg", ["EdDSA", "ES256"])
async def test_b10_new_tokens_stay_bound_to_the_session_key(server: Harness, alg: str) -> None:
    signed_in = await sign_in(server, alg=alg)
    jkt = signed_in.device.jkt
    assert jwt_claims(signed_in.access_token)["cnf"] == {"jkt": jkt}
    current = signed_in.refresh_token
    for _ in range(2):
        response = await refresh(server, signed_in.device, current)
        assert response.status_code == 200
        access = response.json()["access_token"]
        claims = jwt_claims(access)
        assert claims["cnf"] == {"jkt": jkt}
        assert claims["sid"] == jwt_claims(signed_in.access_token)["sid"]
        assert claims["sub"] == jwt_claims(signed_in.access_token)["sub"]
        # Another key cannot use the new access token either.
        assert (await server.me(server.device(), access)).status_code == 401
        current = response.json()["refresh_token"]


async def test_idle_session_refuses_refresh_and_me(server: Harness, signed_in: SignedIn) -> None:
    idle = server.settings.session_idle_timeout
    assert idle == 7 * DAY
    device = signed_in.device
    # One second before the idle end, the session is still alive and refresh renews it.
    server.clock.advance(idle - 1)
    alive = await refresh(server, device, signed_in.refresh_token)
    assert alive.status_code == 200, alive.text
    # Then exactly idle_timeout without use: refresh and /v1/me are refused.
    server.clock.advance(idle)
    _refused(await refresh(server, device, alive.json()["refresh_token"]))
    # An access token minted for the session now (so it has not expired) is still refused.
    fresh = await _mint_access_token(server, alive.json()["access_token"])
    me = await server.me(device, fresh)
    assert me.status_code == 401
    assert 'error="invalid_token"' in me.headers["www-authenticate"]


async def test_me_keeps_the_session_from_going_idle(server: Harness, signed_in: SignedIn) -> None:
    device = signed_in.device
    day6 = 6 * DAY
    server.clock.advance(day6)
    token = await _mint_access_token(server, signed_in.access_token)
    assert (await server.me(device, token)).status_code == 200
    server.clock.advance(day6)  # 12 days after login, 6 days after the last use
    response = await refresh(server, device, signed_in.refresh_token)
    assert response.status_code == 200, response.text


async def test_absolute_lifetime_ends_a_session_used_every_day(
    server: Harness, signed_in: SignedIn
) -> None:
    lifetime = server.settings.session_absolute_lifetime
    assert lifetime == 30 * DAY
    device = signed_in.device
    start = server.clock.now()
    expires_at = start + lifetime
    current = signed_in.refresh_token
    for _ in range(29):
        server.clock.advance(DAY)
        response = await refresh(server, device, current)
        assert response.status_code == 200, (server.clock.now() - start, response.text)
        current = response.json()["refresh_token"]
        assert (await server.me(device, response.json()["access_token"])).status_code == 200
    # Near the end the access token is capped at the session's end.
    server.clock.current = expires_at - 100
    near_end = await refresh(server, device, current)
    assert near_end.status_code == 200, near_end.text
    assert near_end.json()["expires_in"] == 100
    access = near_end.json()["access_token"]
    assert jwt_claims(access)["exp"] == expires_at
    current = near_end.json()["refresh_token"]
    server.clock.current = expires_at - 1
    assert (await server.me(device, access)).status_code == 200
    last = await refresh(server, device, current)
    assert last.status_code == 200
    assert last.json()["expires_in"] == 1
    # At 30 days: refused, refresh and access token alike.
    server.clock.current = expires_at
    _refused(await refresh(server, device, last.json()["refresh_token"]))
    assert (await server.me(device, last.json()["access_token"])).status_code == 401
    # Even an access token minted now with a normal lifetime: the session has ended.
    forged = await _mint_access_token(server, access)
    assert (await server.me(device, forged)).status_code == 401


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "A" * 43,
        "x" * 129,
        "üñí",
        "eyJhbGciOiJFZERTQSJ9.e30.AAAA",
    ],
)
async def test_unknown_or_garbage_refresh_token_is_invalid_grant(
    server: Harness, signed_in: SignedIn, token: str
) -> None:
    response = await refresh(server, signed_in.device, token)
    _refused(response)
    assert "refresh_token" not in response.text.lower() or "error" in response.json()


async def test_access_token_is_not_a_refresh_token(server: Harness, signed_in: SignedIn) -> None:
    _refused(await refresh(server, signed_in.device, signed_in.access_token))


@pytest.mark.parametrize("value", [None, ""])
async def test_missing_refresh_token_is_invalid_request(
    server: Harness, signed_in: SignedIn, value: str | None
) -> None:
    response = await refresh(server, signed_in.device, value)
    _refused(response, "invalid_request")


async def test_refreshes_are_reported_as_events(server: Harness, signed_in: SignedIn) -> None:
    device = signed_in.device
    first = await refresh(server, device, signed_in.refresh_token)
    retry = await refresh(server, device, signed_in.refresh_token)
    assert first.status_code == retry.status_code == 200
    session_id = jwt_claims(signed_in.access_token)["sid"]
    assert events_named(server, "refresh.rotated") == [{"session_id": session_id, "jkt": device.jkt}]
    assert events_named(server, "refresh.retried") == [{"session_id": session_id, "jkt": device.jkt}]
    for event in server.events:
        for value in event.fields.values():
            assert value not in (signed_in.refresh_token, first.json()["refresh_token"])


async def _mint_access_token(server: Harness, like: str) -> str:
    """An access token for the same session as `like`, issued now by the server's own key
    (only to probe the session check when every real token would have expired)."""
    from protocol.access_token import issue_access_token

    claims = jwt_claims(like)
    current = server.app.state.services.keys.key_set.current
    return issue_access_token(
        key=current.key,
        kid=current.kid,
        issuer=claims["iss"],
        audience=claims["aud"],
        subject=claims["sub"],
        client_id=claims["client_id"],
        session_id=claims["sid"],
        jkt=claims["cnf"]["jkt"],
        jti="probe-" + str(server.clock.now()),
        issued_at=server.clock.now(),
        lifetime=600,
        auth_time=claims["auth_time"],
    )


async def test_me_helper_sanity(server: Harness, signed_in: SignedIn) -> None:
    """The minted probe token is accepted while the session is live (so refusals above are the
    session's end, not a bad probe)."""
    token = await _mint_access_token(server, signed_in.access_token)
    response = await call(server, signed_in.device, "GET", "/v1/me", token)
    assert response.status_code == 200, response.text
