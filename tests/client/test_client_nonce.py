"""DPoP nonces (RFC 9449 §8, §9): one retry with the server's nonce, never a loop."""

from __future__ import annotations

import httpx
import pytest
from client_fake_server import FakeServer, sign_in
from splitlink_client import ClientError, SplitlinkClient

from protocol.encoding import b64url_encode


def test_use_dpop_nonce_triggers_exactly_one_retry_with_the_nonce(
    client: SplitlinkClient, server: FakeServer
) -> None:
    server.require_nonce = True
    client.start_login("alice@example.com")
    first, second = server.requests_to("/v1/login/start")
    assert first.proof is not None and second.proof is not None
    assert first.proof.nonce is None
    assert second.proof.nonce == server.nonce
    assert first.proof.jti != second.proof.jti
    assert client.state.pending is not None


def test_second_use_dpop_nonce_is_raised_not_looped(
    client: SplitlinkClient, server: FakeServer
) -> None:
    server.require_nonce = True
    server.always_demand_new_nonce = True
    with pytest.raises(ClientError) as caught:
        client.start_login("alice@example.com")
    assert (caught.value.error, caught.value.status) == ("use_dpop_nonce", 400)
    assert len(server.requests_to("/v1/login/start")) == 2
    assert client.state.pending is None


def test_latest_server_nonce_is_sent_in_later_proofs(
    client: SplitlinkClient, server: FakeServer
) -> None:
    server.require_nonce = True
    client.start_login("alice@example.com")
    assert client.dpop_nonce == server.nonce
    client.complete_login(server.outbox["alice@example.com"])
    # The remembered nonce is accepted at once: no second token request.
    [token] = server.requests_to("/oauth/token")
    assert token.proof is not None and token.proof.nonce == server.nonce
    # The server rotates its nonce: one retry, then the new one is remembered.
    old_nonce = server.nonce
    server.nonce = "rotated-nonce"
    client.me()
    client.me()
    nonces = [s.proof.nonce if s.proof else None for s in server.requests_to("/v1/me")]
    # Resource-server nonces are kept apart from the token endpoint's (RFC 9449 §9): the first
    # /v1 request has none to send, is challenged once, and later ones reuse the new one.
    assert old_nonce not in nonces
    assert nonces == [None, "rotated-nonce", "rotated-nonce"]
    assert client.dpop_nonce == "rotated-nonce"


def test_resource_nonce_challenge_in_www_authenticate_is_retried_once(
    client: SplitlinkClient, server: FakeServer
) -> None:
    sign_in(client, server)
    server.require_nonce = True
    assert client.me()["user"]["email"] == "alice@example.com"
    first, second = server.requests_to("/v1/me")
    assert first.proof is not None and second.proof is not None
    assert (first.proof.nonce, second.proof.nonce) == (None, server.nonce)


def test_resource_nonce_challenge_twice_is_raised_with_status_401(
    client: SplitlinkClient, server: FakeServer
) -> None:
    sign_in(client, server)
    server.require_nonce = True
    server.always_demand_new_nonce = True
    with pytest.raises(ClientError) as caught:
        client.me()
    assert (caught.value.error, caught.value.status) == ("use_dpop_nonce", 401)
    assert len(server.requests_to("/v1/me")) == 2


def test_use_dpop_nonce_without_a_nonce_header_is_not_retried(
    client: SplitlinkClient, server: FakeServer
) -> None:
    server.overrides["/v1/login/start"] = httpx.Response(
        400, json={"error": "use_dpop_nonce", "error_description": "no nonce given"}
    )
    with pytest.raises(ClientError) as caught:
        client.start_login("alice@example.com")
    assert caught.value.error == "use_dpop_nonce"
    assert len(server.requests_to("/v1/login/start")) == 1


def test_nonce_from_a_successful_response_is_remembered(
    client: SplitlinkClient, server: FakeServer
) -> None:
    server.overrides["/v1/login/start"] = httpx.Response(
        202,
        json={
            "attempt_id": b64url_encode(b"\x01" * 16),
            "device_half": b64url_encode(b"\x02" * 32),
            "expires_in": 60,
        },
        headers={"DPoP-Nonce": "fresh"},
    )
    client.start_login("alice@example.com")
    assert client.dpop_nonce == "fresh"
