"""Session list, ending sessions, logout, and RFC 7009 revocation: an ended session refuses its
refresh token and its access tokens at once (threats.md G5, G7; standards.md §8)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import httpx
import pytest
from support import backends
from support.harness import Harness

from protocol.encoding import b64url_encode

if TYPE_CHECKING:
    from conftest import Ops, SignedIn

pytestmark = pytest.mark.anyio


def _same_for_every_request(response: httpx.Response) -> list[tuple[str, str]]:
    """The headers but the request id, which is fresh for each request (SPEC.md §10)."""
    return [(k, v) for k, v in response.headers.multi_items() if k != "x-request-id"]


async def _assert_ended(server: Harness, ops: Ops, who: SignedIn, *extra_refresh: str) -> None:
    """Refresh refuses every refresh token of the session, /v1/me refuses its access token."""
    for token in (who.refresh_token, *extra_refresh):
        response = await ops.refresh(who.device, token)
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "invalid_grant"
    me = await server.me(who.device, who.access_token)
    assert me.status_code == 401, me.text
    assert 'error="invalid_token"' in me.headers["www-authenticate"]


async def _assert_alive(server: Harness, ops: Ops, who: SignedIn) -> SignedIn:
    me = await server.me(who.device, who.access_token)
    assert me.status_code == 200, me.text
    response = await ops.refresh(who.device, who.refresh_token)
    assert response.status_code == 200, response.text
    return type(who)(device=who.device, tokens=response.json())


async def test_g7_session_list_shows_device_facts_and_no_token_material(
    server: Harness, ops: Ops
) -> None:
    phone = await ops.sign_in("alice@example.com", device_name="Alice's phone")
    server.clock.advance(100)
    laptop = await ops.sign_in("alice@example.com", alg="ES256", device_name="Alice's laptop")
    other = await ops.sign_in("bob@example.com", device_name="Bob's phone")
    server.clock.advance(120)
    assert (await server.me(phone.device, phone.access_token)).status_code == 200
    response = await ops.call(phone.device, "GET", "/v1/sessions", phone.access_token)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    sessions = response.json()["sessions"]
    assert [s["id"] for s in sessions] == [phone.session_id, laptop.session_id]
    by_id = {s["id"]: s for s in sessions}
    now = server.clock.now()
    assert by_id[phone.session_id] == {
        "id": phone.session_id,
        "device_name": "Alice's phone",
        "key_alg": "EdDSA",
        "created_at": now - 220,
        "last_used_at": now,  # the /v1/me call above (and this one) used it
        "expires_at": now - 220 + server.settings.session_absolute_lifetime,
        "current": True,
    }
    assert by_id[laptop.session_id]["device_name"] == "Alice's laptop"
    assert by_id[laptop.session_id]["key_alg"] == "ES256"
    assert by_id[laptop.session_id]["created_at"] == now - 120
    assert by_id[laptop.session_id]["last_used_at"] == now - 120
    assert by_id[laptop.session_id]["current"] is False
    secrets = (
        {who.access_token for who in (phone, laptop, other)}
        | {who.refresh_token for who in (phone, laptop, other)}
        | {who.device.jkt for who in (phone, laptop, other)}
    )
    for session in sessions:
        for key, value in session.items():
            assert not any(word in key.lower() for word in ("token", "hash", "jkt")), key
            assert value not in secrets
    for secret in secrets:
        assert secret not in response.text
    assert other.session_id not in response.text


async def test_g7_ending_another_users_session_answers_exactly_as_an_unknown_id(
    server: Harness, ops: Ops
) -> None:
    alice = await ops.sign_in("alice@example.com")
    bob = await ops.sign_in("bob@example.com")
    unknown = b64url_encode(os.urandom(16))

    async def delete(session_id: str) -> httpx.Response:
        return await ops.call(
            alice.device, "DELETE", f"/v1/sessions/{session_id}", alice.access_token
        )

    foreign = await delete(bob.session_id)
    missing = await delete(unknown)
    assert foreign.status_code == missing.status_code == 404
    assert foreign.content == missing.content
    assert foreign.json()["error"] == "not_found"
    assert _same_for_every_request(foreign) == _same_for_every_request(missing)
    # Bob's session is untouched, and no revocation event was recorded.
    await _assert_alive(server, ops, bob)
    assert not ops.events("session.revoked")


async def test_g7_an_idle_session_leaves_the_list_and_cannot_be_ended_again(
    server: Harness, ops: Ops
) -> None:
    phone = await ops.sign_in("alice@example.com", device_name="phone")
    drawer = await ops.sign_in("alice@example.com", device_name="old tablet")
    day = 24 * 60 * 60
    for _ in range(7):  # the phone is used every day, the tablet never
        server.clock.advance(day)
        refreshed = await ops.refresh(phone.device, phone.refresh_token)
        assert refreshed.status_code == 200, refreshed.text
        phone = type(phone)(device=phone.device, tokens=refreshed.json())
    listed = await ops.call(phone.device, "GET", "/v1/sessions", phone.access_token)
    assert [s["id"] for s in listed.json()["sessions"]] == [phone.session_id]
    path = f"/v1/sessions/{drawer.session_id}"
    gone = await ops.call(phone.device, "DELETE", path, phone.access_token)
    assert gone.status_code == 404
    assert gone.json()["error"] == "not_found"


async def test_g7_ending_an_already_ended_session_is_404(server: Harness, ops: Ops) -> None:
    phone = await ops.sign_in("alice@example.com")
    laptop = await ops.sign_in("alice@example.com")
    path = f"/v1/sessions/{laptop.session_id}"
    assert (await ops.call(phone.device, "DELETE", path, phone.access_token)).status_code == 204
    again = await ops.call(phone.device, "DELETE", path, phone.access_token)
    assert again.status_code == 404
    assert again.json()["error"] == "not_found"


Ending = str
ENDINGS: list[Ending] = [
    "delete-from-other-device",
    "logout",
    "revoke-refresh-token",
    "revoke-access-token",
    "revoke-refresh-token-hinted-as-access-token",
    "revoke-access-token-hinted-as-refresh-token",
    "revoke-refresh-token-hinted-as-refresh-token",
    "revoke-access-token-hinted-as-access-token",
]


async def _end(ops: Ops, how: Ending, *, target: SignedIn, other: SignedIn) -> httpx.Response:
    if how == "delete-from-other-device":
        path = f"/v1/sessions/{target.session_id}"
        return await ops.call(other.device, "DELETE", path, other.access_token)
    if how == "logout":
        return await ops.call(target.device, "POST", "/v1/logout", target.access_token)
    parts = how.split("-hinted-as-")
    token = target.refresh_token if parts[0] == "revoke-refresh-token" else target.access_token
    hint = parts[1].replace("-", "_") if len(parts) == 2 else None
    return await ops.revoke(token, hint)


@pytest.mark.parametrize("how", ENDINGS)
async def test_g5_an_ended_session_refuses_refresh_and_access_at_once(
    server: Harness, ops: Ops, how: Ending
) -> None:
    phone = await ops.sign_in("alice@example.com", device_name="phone")
    laptop = await ops.sign_in("alice@example.com", device_name="laptop")
    # The laptop has rotated once: its family holds a rotated and a current token.
    rotated = laptop.refresh_token
    laptop = await _assert_alive(server, ops, laptop)
    response = await _end(ops, how, target=laptop, other=phone)
    expected = 200 if how.startswith("revoke") else 204
    assert response.status_code == expected, response.text
    # At once: no clock advance.
    await _assert_ended(server, ops, laptop, rotated)
    # The other device's session keeps working.
    phone = await _assert_alive(server, ops, phone)
    listed = await ops.call(phone.device, "GET", "/v1/sessions", phone.access_token)
    assert [s["id"] for s in listed.json()["sessions"]] == [phone.session_id]
    assert any(e["session_id"] == laptop.session_id for e in ops.events("session.revoked"))
    (row,) = server.query("SELECT revoked_at FROM sessions WHERE id = ?", laptop.session_id)
    assert row[0] == server.clock.now()


async def test_g5_revocation_answers_junk_exactly_as_a_real_token(
    server: Harness, ops: Ops
) -> None:
    """RFC 7009 §2.2: 200 whether or not the token was known, with the same answer."""
    alice = await ops.sign_in("alice@example.com")
    real = await ops.revoke(alice.refresh_token)
    assert real.status_code == 200
    junk_tokens = [
        "junk",
        b64url_encode(os.urandom(32)),
        "eyJhbGciOiJFZERTQSJ9.e30.AAAA",
        alice.refresh_token,  # already revoked
        alice.access_token,  # its session already ended
        "x" * 4000,
    ]
    for junk in junk_tokens:
        for hint in (None, "access_token", "refresh_token", "something_else"):
            response = await ops.revoke(junk, hint)
            assert response.status_code == 200, (junk[:20], hint, response.text)
            assert response.content == real.content
            assert _same_for_every_request(response) == _same_for_every_request(real)
    assert real.headers["cache-control"] == "no-store"


async def test_revocation_without_a_token_is_invalid_request(ops: Ops) -> None:
    response = await ops.revoke("")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_revoking_an_expired_access_token_is_answered_200(server: Harness, ops: Ops) -> None:
    alice = await ops.sign_in("alice@example.com")
    server.clock.advance(server.settings.access_token_lifetime)
    assert (await ops.revoke(alice.access_token)).status_code == 200


async def test_logout_all_ends_every_session_of_the_user_and_no_other(
    server: Harness, ops: Ops
) -> None:
    phone = await ops.sign_in("alice@example.com")
    laptop = await ops.sign_in("alice@example.com")
    tablet = await ops.sign_in("alice@example.com", alg="ES256")
    bob = await ops.sign_in("bob@example.com")
    response = await ops.call(phone.device, "POST", "/v1/logout/all", phone.access_token)
    assert response.status_code == 204, response.text
    assert response.content == b""
    for who in (phone, laptop, tablet):
        await _assert_ended(server, ops, who)
    await _assert_alive(server, ops, bob)
    user_id = ops.claims(phone.access_token)["sub"]
    assert ops.events("sessions.revoked_all") == [{"user_id": user_id, "count": 3}]


async def test_logout_ends_only_the_current_session(server: Harness, ops: Ops) -> None:
    phone = await ops.sign_in("alice@example.com")
    laptop = await ops.sign_in("alice@example.com")
    response = await ops.call(phone.device, "POST", "/v1/logout", phone.access_token)
    assert response.status_code == 204
    assert response.content == b""
    await _assert_ended(server, ops, phone)
    await _assert_alive(server, ops, laptop)
    # A second logout with the dead token is refused (the session is already over).
    again = await ops.call(phone.device, "POST", "/v1/logout", phone.access_token)
    assert again.status_code == 401


async def test_deleting_the_current_session_ends_it(server: Harness, ops: Ops) -> None:
    phone = await ops.sign_in("alice@example.com")
    path = f"/v1/sessions/{phone.session_id}"
    response = await ops.call(phone.device, "DELETE", path, phone.access_token)
    assert response.status_code == 204
    await _assert_ended(server, ops, phone)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/sessions"),
        ("DELETE", "/v1/sessions/abc"),
        ("POST", "/v1/logout"),
        ("POST", "/v1/logout/all"),
    ],
)
async def test_session_endpoints_need_a_bound_token_and_a_proof(
    server: Harness, ops: Ops, method: str, path: str
) -> None:
    alice = await ops.sign_in("alice@example.com")
    bare = await server.client.request(
        method, path, headers={"Authorization": f"DPoP {alice.access_token}"}
    )
    assert bare.status_code == 401
    thief = server.device()
    stolen = await ops.call(thief, method, path, alice.access_token)
    assert stolen.status_code == 401
    await _assert_alive(server, ops, alice)


@pytest.mark.parametrize(
    "server_overrides",
    [{"rate_limit_start_per_email": 20, "rate_limit_start_per_email_client": 20}],
    indirect=True,
)
async def test_sessions_created_in_one_second_are_listed_by_id_in_byte_order(
    server: Harness, ops: Ops
) -> None:
    # SPEC.md §6.6: oldest first, then by id as ASCII text, whatever the database's collation.
    if server.backend == "postgresql":
        # A database created with a linguistic collation, as many are, orders text otherwise.
        backends.execute(
            server.database_url,
            'ALTER TABLE sessions ALTER COLUMN id TYPE TEXT COLLATE "und-x-icu"',
        )
    first = await ops.sign_in("alice@example.com")
    server.clock.advance(1)
    same_second = [first] + [await ops.sign_in("alice@example.com") for _ in range(7)]
    response = await ops.call(first.device, "GET", "/v1/sessions", first.access_token)
    assert response.status_code == 200, response.text
    listed = [s["id"] for s in response.json()["sessions"]]
    later = sorted(s.session_id for s in same_second[1:])
    assert listed == [first.session_id, *later]
