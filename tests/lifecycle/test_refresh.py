"""The refresh grant: rotation, reuse detection, the grace window, key binding and the session's
idle and absolute ends (RFC 6749 §6, RFC 9449 §5, RFC 9700 §4.14.2; threats.md B10, G1, G3, G4)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import pytest
from support.harness import Harness

if TYPE_CHECKING:
    from conftest import Ops, SignedIn

pytestmark = pytest.mark.anyio

GRACE = 30  # Settings.refresh_grace_period default
DAY = 24 * 60 * 60


def _refused(response: httpx.Response, code: str = "invalid_grant") -> None:
    assert response.status_code == 400, response.text
    assert response.json()["error"] == code, response.text


@pytest.fixture
async def signed_in(ops: Ops) -> SignedIn:
    return await ops.sign_in()


async def test_g1_each_refresh_rotates_and_its_access_token_works(
    server: Harness, ops: Ops, signed_in: SignedIn
) -> None:
    device = signed_in.device
    seen = {signed_in.refresh_token}
    current = signed_in.refresh_token
    for _ in range(3):
        server.clock.advance(60)
        response = await ops.refresh(device, current)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["token_type"] == "DPoP"
        assert body["expires_in"] == server.settings.access_token_lifetime
        assert response.headers["cache-control"] == "no-store"
        assert body["refresh_token"] not in seen
        seen.add(body["refresh_token"])
        current = body["refresh_token"]
        me = await server.me(device, body["access_token"])
        assert me.status_code == 200, me.text
        assert me.json()["session"]["id"] == signed_in.session_id
    # One row per token: each rotated one names its child; only the newest is unrotated.
    rows = ops.refresh_rows(signed_in.session_id)
    assert len(rows) == 4
    assert [r[1] is None for r in rows] == [False, False, False, True]
    assert [r[2] for r in rows[:3]] == [r[0] for r in rows[1:]]


async def test_g1_rotated_token_is_refused_after_the_grace_window(
    server: Harness, ops: Ops, signed_in: SignedIn
) -> None:
    first = await ops.refresh(signed_in.device, signed_in.refresh_token)
    assert first.status_code == 200
    server.clock.advance(GRACE + 1)
    _refused(await ops.refresh(signed_in.device, signed_in.refresh_token))


async def test_g1_reuse_after_grace_revokes_the_whole_session_at_once(
    server: Harness, ops: Ops, signed_in: SignedIn
) -> None:
    """Rotate 3 times, reuse the first token at rotated_at + grace + 1: the newest refresh and
    access tokens are refused at once, every token of the family too, and an event is recorded."""
    device = signed_in.device
    tokens = [signed_in.refresh_token]
    access = signed_in.access_token
    first_rotated_at = server.clock.now()
    for _ in range(3):
        response = await ops.refresh(device, tokens[-1])
        assert response.status_code == 200
        tokens.append(response.json()["refresh_token"])
        access = response.json()["access_token"]
        server.clock.advance(5)
    server.clock.current = first_rotated_at + GRACE + 1
    assert (await server.me(device, access)).status_code == 200  # alive until the reuse
    _refused(await ops.refresh(device, tokens[0]))
    _refused(await ops.refresh(device, tokens[-1]))
    me = await server.me(device, access)
    assert me.status_code == 401
    assert 'error="invalid_token"' in me.headers["www-authenticate"]
    for token in tokens:
        _refused(await ops.refresh(device, token))
    assert {
        "session_id": signed_in.session_id,
        "reason": "refresh_token_reused",
    } in ops.events("session.revoked")
    assert any(
        e["reason"] == "reused" and e["session_id"] == signed_in.session_id
        for e in ops.events("refresh.refused")
    )
    (row,) = server.query(
        "SELECT revoked_at, revoked_reason FROM sessions WHERE id = ?", signed_in.session_id
    )
    assert row == (first_rotated_at + GRACE + 1, "refresh_token_reused")
    assert all(r[3] is not None for r in ops.refresh_rows(signed_in.session_id))


async def test_g3_g4_retry_exactly_grace_seconds_after_rotation_returns_the_same_child(
    server: Harness, ops: Ops, signed_in: SignedIn
) -> None:
    device = signed_in.device
    first = await ops.refresh(device, signed_in.refresh_token)
    assert first.status_code == 200
    server.clock.advance(GRACE)
    retry = await ops.refresh(device, signed_in.refresh_token)
    assert retry.status_code == 200, retry.text
    assert retry.json()["refresh_token"] == first.json()["refresh_token"]
    assert retry.json()["access_token"] != first.json()["access_token"]
    assert (await server.me(device, retry.json()["access_token"])).status_code == 200
    # No fork: still one rotated parent and one unrotated child, and the child still works.
    rows = ops.refresh_rows(signed_in.session_id)
    assert [r[1] is None for r in rows] == [False, True]
    assert not ops.events("session.revoked")
    child = await ops.refresh(device, first.json()["refresh_token"])
    assert child.status_code == 200, child.text


async def test_g3_retry_grace_plus_one_seconds_after_rotation_is_reuse(
    server: Harness, ops: Ops, signed_in: SignedIn
) -> None:
    device = signed_in.device
    first = await ops.refresh(device, signed_in.refresh_token)
    assert first.status_code == 200
    server.clock.advance(GRACE + 1)
    _refused(await ops.refresh(device, signed_in.refresh_token))
    # The child, never used, ends with the session.
    _refused(await ops.refresh(device, first.json()["refresh_token"]))
    assert (await server.me(device, first.json()["access_token"])).status_code == 401
    assert ops.events("session.revoked") == [
        {"session_id": signed_in.session_id, "reason": "refresh_token_reused"}
    ]


async def test_g3_retry_within_grace_after_the_child_was_used_is_reuse(
    server: Harness, ops: Ops, signed_in: SignedIn
) -> None:
    device = signed_in.device
    first = await ops.refresh(device, signed_in.refresh_token)
    assert first.status_code == 200
    second = await ops.refresh(device, first.json()["refresh_token"])
    assert second.status_code == 200
    server.clock.advance(1)  # well within the grace window of the first rotation
    _refused(await ops.refresh(device, signed_in.refresh_token))
    _refused(await ops.refresh(device, second.json()["refresh_token"]))
    assert (await server.me(device, second.json()["access_token"])).status_code == 401
    assert ops.events("session.revoked") == [
        {"session_id": signed_in.session_id, "reason": "refresh_token_reused"}
    ]


async def _assert_not_rotated(ops: Ops, signed_in: SignedIn) -> None:
    """The refused attempt changed nothing: the original token is unrotated and still works."""
    rows = ops.refresh_rows(signed_in.session_id)
    assert len(rows) == 1 and rows[0][1] is None and rows[0][3] is None, rows
    assert not ops.events("session.revoked")
    good = await ops.refresh(signed_in.device, signed_in.refresh_token)
    assert good.status_code == 200, good.text


async def test_b10_refresh_without_proof_is_refused_and_rotates_nothing(
    ops: Ops, signed_in: SignedIn
) -> None:
    response = await ops.refresh(signed_in.device, signed_in.refresh_token, with_proof=False)
    _refused(response, "invalid_dpop_proof")
    await _assert_not_rotated(ops, signed_in)


async def test_b10_g4_refresh_with_another_keys_proof_is_refused_and_rotates_nothing(
    server: Harness, ops: Ops, signed_in: SignedIn
) -> None:
    thief = server.device()
    _refused(await ops.refresh(thief, signed_in.refresh_token))
    assert any(e["reason"] == "wrong_key" for e in ops.events("refresh.refused"))
    # A proof naming the victim's public key but signed by the thief's key.
    forged = signed_in.device.proof("POST", "/oauth2/token", sign_with=thief.key)
    _refused(await ops.refresh(thief, signed_in.refresh_token, proof=forged), "invalid_dpop_proof")
    await _assert_not_rotated(ops, signed_in)


async def test_b10_a_thief_with_a_rotated_token_gets_nothing_from_the_grace_window(
    server: Harness, ops: Ops, signed_in: SignedIn
) -> None:
    """G3: the grace-window retry is bound to the key as well."""
    first = await ops.refresh(signed_in.device, signed_in.refresh_token)
    assert first.status_code == 200
    thief = server.device()
    _refused(await ops.refresh(thief, signed_in.refresh_token))
    _refused(await ops.refresh(thief, first.json()["refresh_token"]))
    still = await ops.refresh(signed_in.device, first.json()["refresh_token"])
    assert still.status_code == 200, still.text


async def test_b10_refresh_with_a_replayed_proof_is_refused_and_rotates_nothing(
    ops: Ops, signed_in: SignedIn
) -> None:
    device = signed_in.device
    proof = device.proof("POST", "/oauth2/token")
    first = await ops.refresh(device, signed_in.refresh_token, proof=proof)
    assert first.status_code == 200
    child = first.json()["refresh_token"]
    _refused(await ops.refresh(device, child, proof=proof), "invalid_dpop_proof")
    rows = ops.refresh_rows(signed_in.session_id)
    assert len(rows) == 2 and rows[1][1] is None, rows
    again = await ops.refresh(device, child)
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
    ops: Ops, signed_in: SignedIn, claims: dict[str, Any]
) -> None:
    proof = signed_in.device.proof("POST", "/oauth2/token", claims=claims)
    response = await ops.refresh(signed_in.device, signed_in.refresh_token, proof=proof)
    _refused(response, "invalid_dpop_proof")
    await _assert_not_rotated(ops, signed_in)


@pytest.mark.parametrize("alg", ["EdDSA", "ES256"])
async def test_b10_new_tokens_keep_the_session_key_binding(
    server: Harness, ops: Ops, alg: str
) -> None:
    signed_in = await ops.sign_in(alg=alg)
    jkt = signed_in.device.jkt
    first_claims = ops.claims(signed_in.access_token)
    assert first_claims["cnf"] == {"jkt": jkt}
    current = signed_in.refresh_token
    for _ in range(2):
        response = await ops.refresh(signed_in.device, current)
        assert response.status_code == 200
        access = response.json()["access_token"]
        claims = ops.claims(access)
        assert claims["cnf"] == {"jkt": jkt}
        assert (claims["sid"], claims["sub"]) == (first_claims["sid"], first_claims["sub"])
        assert claims["auth_time"] == first_claims["auth_time"]
        # Another key cannot use the new access token.
        assert (await server.me(server.device(), access)).status_code == 401
        current = response.json()["refresh_token"]


async def test_idle_session_refuses_refresh_and_me(
    server: Harness, ops: Ops, signed_in: SignedIn
) -> None:
    idle = server.settings.session_idle_timeout
    assert idle == 7 * DAY
    device = signed_in.device
    # One second before the idle end the session is alive, and refresh renews it.
    server.clock.advance(idle - 1)
    alive = await ops.refresh(device, signed_in.refresh_token)
    assert alive.status_code == 200, alive.text
    # Then exactly idle_timeout without any use: refresh and /v1/me are refused.
    server.clock.advance(idle)
    _refused(await ops.refresh(device, alive.json()["refresh_token"]))
    unexpired = ops.mint_access_token(alive.json()["access_token"])
    me = await server.me(device, unexpired)
    assert me.status_code == 401
    assert 'error="invalid_token"' in me.headers["www-authenticate"]


async def test_use_at_v1_keeps_the_session_from_going_idle(
    server: Harness, ops: Ops, signed_in: SignedIn
) -> None:
    server.clock.advance(6 * DAY)
    token = ops.mint_access_token(signed_in.access_token)
    assert (await server.me(signed_in.device, token)).status_code == 200
    server.clock.advance(6 * DAY)  # 12 days after login, 6 days after the last use
    response = await ops.refresh(signed_in.device, signed_in.refresh_token)
    assert response.status_code == 200, response.text


async def test_absolute_lifetime_ends_a_session_used_every_day(
    server: Harness, ops: Ops, signed_in: SignedIn
) -> None:
    lifetime = server.settings.session_absolute_lifetime
    assert lifetime == 30 * DAY
    device = signed_in.device
    expires_at = server.clock.now() + lifetime
    current = signed_in.refresh_token
    for day in range(1, 30):
        server.clock.advance(DAY)
        response = await ops.refresh(device, current)
        assert response.status_code == 200, (day, response.text)
        assert response.json()["expires_in"] == 600
        current = response.json()["refresh_token"]
        assert (await server.me(device, response.json()["access_token"])).status_code == 200
    # Near the end, the access token never outlives the session.
    server.clock.current = expires_at - 100
    near_end = await ops.refresh(device, current)
    assert near_end.status_code == 200, near_end.text
    assert near_end.json()["expires_in"] == 100
    access = near_end.json()["access_token"]
    assert ops.claims(access)["exp"] == expires_at
    server.clock.current = expires_at - 1
    assert (await server.me(device, access)).status_code == 200
    last = await ops.refresh(device, near_end.json()["refresh_token"])
    assert last.status_code == 200
    assert last.json()["expires_in"] == 1
    # At 30 days: refused, refresh and access token alike.
    server.clock.current = expires_at
    _refused(await ops.refresh(device, last.json()["refresh_token"]))
    assert (await server.me(device, last.json()["access_token"])).status_code == 401
    # Even a token minted now with a full lifetime: the session itself has ended.
    assert (await server.me(device, ops.mint_access_token(access))).status_code == 401


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("garbage", id="garbage"),
        pytest.param("A" * 43, id="well-formed-unknown"),
        pytest.param("x" * 129, id="too-long"),
        pytest.param("x" * 10_000, id="huge"),
        pytest.param("üñí", id="non-ascii"),
        pytest.param("eyJhbGciOiJFZERTQSJ9.e30.AAAA", id="jwt-shaped"),
    ],
)
async def test_unknown_or_garbage_refresh_token_is_invalid_grant(
    ops: Ops, signed_in: SignedIn, token: str
) -> None:
    _refused(await ops.refresh(signed_in.device, token))


async def test_an_access_token_is_not_a_refresh_token(ops: Ops, signed_in: SignedIn) -> None:
    _refused(await ops.refresh(signed_in.device, signed_in.access_token))


@pytest.mark.parametrize("value", [None, ""], ids=["absent", "empty"])
async def test_missing_refresh_token_is_invalid_request(
    ops: Ops, signed_in: SignedIn, value: str | None
) -> None:
    _refused(await ops.refresh(signed_in.device, value), "invalid_request")


async def test_every_refused_outcome_answers_the_same_body(
    server: Harness, ops: Ops, signed_in: SignedIn
) -> None:
    """No oracle: unknown, wrong key, reused and ended sessions are indistinguishable."""
    device = signed_in.device
    bodies: dict[str, bytes] = {}
    bodies["unknown"] = (await ops.refresh(device, "A" * 43)).content
    bodies["too-long"] = (await ops.refresh(device, "A" * 129)).content
    bodies["wrong-key"] = (await ops.refresh(server.device(), signed_in.refresh_token)).content
    first = await ops.refresh(device, signed_in.refresh_token)
    server.clock.advance(GRACE + 1)
    bodies["reused"] = (await ops.refresh(device, signed_in.refresh_token)).content
    bodies["session-ended"] = (await ops.refresh(device, first.json()["refresh_token"])).content
    assert len(set(bodies.values())) == 1, bodies
    assert ops.events("refresh.refused")[-1]["reason"] == "session_ended"


async def test_refreshes_are_reported_as_events_without_secrets(
    server: Harness, ops: Ops, signed_in: SignedIn
) -> None:
    device = signed_in.device
    first = await ops.refresh(device, signed_in.refresh_token)
    retry = await ops.refresh(device, signed_in.refresh_token)
    assert first.status_code == retry.status_code == 200
    expected = [{"session_id": signed_in.session_id, "jkt": device.jkt}]
    assert ops.events("refresh.rotated") == expected
    assert ops.events("refresh.retried") == expected
    secrets = {signed_in.refresh_token, first.json()["refresh_token"], signed_in.access_token}
    for event in server.events:
        assert not secrets & {str(v) for v in event.fields.values()}


async def test_minted_probe_token_is_accepted_while_the_session_is_live(
    server: Harness, ops: Ops, signed_in: SignedIn
) -> None:
    """The probe token of the idle and absolute tests is good while the session lives, so their
    refusals come from the session's end."""
    token = ops.mint_access_token(signed_in.access_token)
    response = await ops.call(signed_in.device, "GET", "/v1/me", token)
    assert response.status_code == 200, response.text
