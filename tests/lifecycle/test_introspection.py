"""RFC 7662 introspection for configured resource servers: authenticated callers only, and an
inactive token is exactly `{"active": false}` (standards.md §9; RFC 9449 §6.2)."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from support.harness import Harness, running_server

from protocol.encoding import b64url_encode

if TYPE_CHECKING:
    from conftest import Ops, SignedIn

pytestmark = pytest.mark.anyio

# The client the `server` fixture configures (conftest.INTROSPECTION_CLIENT).
CLIENT_ID, CLIENT_SECRET = "orders-api", "introspection-secret-0123456789abcdef"
INACTIVE = {"active": False}


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture
async def signed_in(ops: Ops) -> SignedIn:
    return await ops.sign_in("alice@example.com")


def _assert_inactive(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    assert response.json() == INACTIVE  # no sub, exp or reason leaks
    assert response.headers["cache-control"] == "no-store"


BAD_CREDENTIALS = [
    pytest.param(None, id="none"),
    pytest.param("Basic " + _b64(f"{CLIENT_ID}:wrong"), id="wrong-secret"),
    pytest.param("Basic " + _b64(f"{CLIENT_ID}:{CLIENT_SECRET[:-1]}"), id="secret-prefix"),
    pytest.param("Basic " + _b64(f"{CLIENT_ID}:{CLIENT_SECRET}x"), id="secret-suffix"),
    pytest.param("Basic " + _b64(f"{CLIENT_ID}:"), id="empty-secret"),
    pytest.param("Basic " + _b64(f"other-api:{CLIENT_SECRET}"), id="unknown-id"),
    pytest.param("Basic " + _b64("other-api:" + "\0" * 32), id="unknown-id-null-secret"),
    pytest.param("Basic " + _b64(f":{CLIENT_SECRET}"), id="empty-id"),
    pytest.param("Basic " + _b64(CLIENT_ID), id="no-colon"),
    pytest.param("Basic !!!not-base64", id="not-base64"),
    pytest.param("Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(), id="not-utf8"),
    pytest.param(f"Bearer {CLIENT_SECRET}", id="bearer"),
    pytest.param("Basic", id="scheme-only"),
]


@pytest.mark.parametrize("authorization", BAD_CREDENTIALS)
async def test_callers_without_valid_credentials_get_401_invalid_client(
    ops: Ops, signed_in: SignedIn, authorization: str | None
) -> None:
    response = await ops.introspect(signed_in.access_token, authorization=authorization)
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_client"
    assert "active" not in response.text


async def test_the_configured_client_is_the_fixtures(ops: Ops) -> None:
    assert ops.introspection_client == (CLIENT_ID, CLIENT_SECRET)


async def test_two_authorization_headers_are_refused(
    server: Harness, ops: Ops, signed_in: SignedIn
) -> None:
    good = ops.basic(CLIENT_ID, CLIENT_SECRET)
    response = await server.client.post(
        "/oauth2/introspect",
        data={"token": signed_in.access_token},
        headers=[("Authorization", good), ("Authorization", good)],
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


@pytest.mark.parametrize("authorization", [None, "Basic " + _b64(f"{CLIENT_ID}:wrong")])
async def test_401_from_introspection_carries_a_basic_challenge(
    ops: Ops, signed_in: SignedIn, authorization: str | None
) -> None:
    """RFC 6749 §5.2, RFC 7235 §3.1: a 401 names the scheme to use."""
    response = await ops.introspect(signed_in.access_token, authorization=authorization)
    assert response.status_code == 401
    assert response.headers.get("www-authenticate", "").lower().startswith("basic")


async def test_no_introspection_client_configured_refuses_everyone(tmp_path: Path) -> None:
    async with running_server(tmp_path / "bare") as bare:
        response = await bare.client.post(
            "/oauth2/introspect",
            data={"token": "x"},
            headers={"Authorization": "Basic " + _b64(":" + "\0" * 32)},
        )
        assert response.status_code == 401
        assert response.json()["error"] == "invalid_client"


async def test_active_access_token(server: Harness, ops: Ops, signed_in: SignedIn) -> None:
    response = await ops.introspect(signed_in.access_token)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    claims = ops.claims(signed_in.access_token)
    assert body["active"] is True
    assert body["token_type"] == "DPoP"
    assert body["cnf"] == {"jkt": signed_in.device.jkt}
    assert body["sub"] == claims["sub"]
    assert body["exp"] == claims["exp"] == server.clock.now() + 600
    assert body["client_id"] == server.settings.client_id == claims["client_id"]
    assert body["iss"] == server.settings.issuer
    assert body["sid"] == signed_in.session_id
    for secret in (signed_in.access_token, signed_in.refresh_token):
        assert secret not in response.text


async def test_access_token_with_access_token_hint(ops: Ops, signed_in: SignedIn) -> None:
    response = await ops.introspect(signed_in.access_token, hint="access_token")
    assert response.json()["active"] is True


async def test_a_wrong_hint_still_finds_an_access_token(ops: Ops, signed_in: SignedIn) -> None:
    """RFC 7662 §2.1: the hint may order the search, never limit it."""
    response = await ops.introspect(signed_in.access_token, hint="refresh_token")
    assert response.status_code == 200
    assert response.json()["active"] is True
    assert response.json()["token_type"] == "DPoP"


async def test_a_wrong_hint_still_finds_a_refresh_token(ops: Ops, signed_in: SignedIn) -> None:
    response = await ops.introspect(signed_in.refresh_token, hint="access_token")
    assert response.json()["active"] is True
    assert response.json()["cnf"] == {"jkt": signed_in.device.jkt}


@pytest.mark.parametrize("how", ["revoke", "logout", "logout-all"])
async def test_access_token_of_an_ended_session_is_exactly_inactive(
    ops: Ops, signed_in: SignedIn, how: str
) -> None:
    if how == "revoke":
        assert (await ops.revoke(signed_in.refresh_token)).status_code == 200
    else:
        path = "/v1/logout" if how == "logout" else "/v1/logout/all"
        ended = await ops.call(signed_in.device, "POST", path, signed_in.access_token)
        assert ended.status_code == 204
    _assert_inactive(await ops.introspect(signed_in.access_token))
    _assert_inactive(await ops.introspect(signed_in.refresh_token))


async def test_expired_access_token_is_exactly_inactive(
    server: Harness, ops: Ops, signed_in: SignedIn
) -> None:
    server.clock.advance(599)
    assert (await ops.introspect(signed_in.access_token)).json()["active"] is True
    server.clock.advance(1)
    _assert_inactive(await ops.introspect(signed_in.access_token))


async def test_active_refresh_token(server: Harness, ops: Ops, signed_in: SignedIn) -> None:
    response = await ops.introspect(signed_in.refresh_token)
    assert response.status_code == 200
    body = response.json()
    assert body["active"] is True
    assert body["cnf"] == {"jkt": signed_in.device.jkt}
    assert body["sub"] == ops.claims(signed_in.access_token)["sub"]
    assert body["client_id"] == server.settings.client_id
    hinted = await ops.introspect(signed_in.refresh_token, hint="refresh_token")
    assert hinted.json() == body


async def test_rotated_refresh_token_is_exactly_inactive_and_its_child_active(
    ops: Ops, signed_in: SignedIn
) -> None:
    response = await ops.refresh(signed_in.device, signed_in.refresh_token)
    assert response.status_code == 200
    _assert_inactive(await ops.introspect(signed_in.refresh_token))
    child = await ops.introspect(response.json()["refresh_token"])
    assert child.json()["active"] is True
    # Introspection of the rotated token did not count as a reuse.
    assert not ops.events("session.revoked")


async def test_introspection_does_not_keep_a_session_from_going_idle(
    server: Harness, ops: Ops, signed_in: SignedIn
) -> None:
    """Only the device's own use counts: a resource server asking about a token does not."""
    idle = server.settings.session_idle_timeout
    server.clock.advance(idle - 60)
    probe = ops.mint_access_token(signed_in.access_token)
    assert (await ops.introspect(probe)).json()["active"] is True
    assert (await ops.introspect(signed_in.refresh_token)).json()["active"] is True
    server.clock.advance(60)
    _assert_inactive(await ops.introspect(probe))
    refused = await ops.refresh(signed_in.device, signed_in.refresh_token)
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_grant"


async def test_refresh_token_of_an_idle_session_is_exactly_inactive(
    server: Harness, ops: Ops, signed_in: SignedIn
) -> None:
    server.clock.advance(server.settings.session_idle_timeout)
    _assert_inactive(await ops.introspect(signed_in.refresh_token))


@pytest.mark.parametrize(
    "token",
    [
        "junk",
        "eyJhbGciOiJFZERTQSJ9.e30.AAAA",
        "x" * 5000,
    ],
)
async def test_junk_is_exactly_inactive(ops: Ops, token: str) -> None:
    _assert_inactive(await ops.introspect(token))
    _assert_inactive(await ops.introspect(token, hint="refresh_token"))
    _assert_inactive(await ops.introspect(token, hint="access_token"))


async def test_random_well_formed_token_is_exactly_inactive(ops: Ops) -> None:
    _assert_inactive(await ops.introspect(b64url_encode(os.urandom(32))))


async def test_access_token_of_another_server_is_exactly_inactive(ops: Ops, tmp_path: Path) -> None:
    async with running_server(tmp_path / "other") as other:
        tokens = await other.login(other.device(), "alice@example.com")
    _assert_inactive(await ops.introspect(tokens["access_token"]))
    _assert_inactive(await ops.introspect(tokens["refresh_token"]))


async def test_introspection_without_a_token_is_invalid_request(ops: Ops) -> None:
    response = await ops.introspect("")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
