"""Tokens: rotation on refresh, refresh before expiry, sessions, logout, one issuer only."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from client_fake_server import ISSUER, FakeClock, FakeServer, sign_in
from splitlink_client import ClientError, LocalError, SplitlinkClient, load_state


def _stored_refresh_token(state_path: Path) -> str:
    tokens = load_state(state_path).tokens
    assert tokens is not None
    return tokens.refresh_token


def test_refresh_replaces_the_stored_refresh_token(
    client: SplitlinkClient, server: FakeServer, state_path: Path
) -> None:
    sign_in(client, server)
    old = _stored_refresh_token(state_path)
    assert client.refresh() == 300
    new = _stored_refresh_token(state_path)
    assert new != old
    assert new == server.sessions[next(iter(server.sessions))].refresh_token
    # And the new one is what the next refresh presents (the old one is dead at the server).
    client.refresh()
    last = server.requests_to("/oauth/token")[-1].request.read().decode()
    assert dict(httpx.QueryParams(last))["refresh_token"] == new


def test_refresh_sends_the_refresh_token_grant_with_a_proof_by_the_device_key(
    client: SplitlinkClient, server: FakeServer
) -> None:
    sign_in(client, server)
    client.refresh()
    seen = server.requests_to("/oauth/token")[-1]
    assert dict(httpx.QueryParams(seen.request.read().decode()))["grant_type"] == "refresh_token"
    assert seen.proof is not None and client.state.key is not None
    assert seen.proof.jkt == client.state.key.public.thumbprint


def test_refused_refresh_token_is_forgotten(
    client: SplitlinkClient, server: FakeServer, state_path: Path
) -> None:
    sign_in(client, server)
    for session in server.sessions.values():
        session.ended = True
    with pytest.raises(ClientError) as caught:
        client.refresh()
    assert caught.value.error == "invalid_grant"
    assert load_state(state_path).tokens is None


def test_expired_access_token_is_refreshed_before_use(
    client: SplitlinkClient, server: FakeServer, clock: FakeClock
) -> None:
    sign_in(client, server)
    clock.advance(301)
    assert client.me()["user"]["email"] == "alice@example.com"
    grants = [
        dict(httpx.QueryParams(s.request.read().decode()))["grant_type"]
        for s in server.requests_to("/oauth/token")
    ]
    assert grants[-1] == "refresh_token"
    assert len(server.requests_to("/v1/me")) == 1


def test_resource_calls_require_signing_in_first_and_send_nothing(
    client: SplitlinkClient, server: FakeServer
) -> None:
    with pytest.raises(LocalError, match="not signed in"):
        client.me()
    with pytest.raises(LocalError, match="not signed in"):
        client.refresh()
    with pytest.raises(LocalError, match="not signed in"):
        client.logout()
    assert server.seen == []


def test_tokens_are_never_sent_to_another_server(
    client: SplitlinkClient, server: FakeServer, state_path: Path, clock: FakeClock
) -> None:
    sign_in(client, server)
    other = FakeServer(clock, issuer="https://other.test")
    with httpx.Client(transport=other.transport) as http:
        elsewhere = SplitlinkClient("https://other.test", state_path, http=http, clock=clock)
        with pytest.raises(LocalError, match=re.escape("signed in at https://splitlink.test")):
            elsewhere.me()
        with pytest.raises(LocalError):
            elsewhere.refresh()
    assert all("Authorization" not in s.request.headers for s in other.seen)
    assert all(s.request.method == "GET" for s in other.seen)


def test_sessions_lists_and_end_session_ends_another_session(
    client: SplitlinkClient,
    server: FakeServer,
    clock: FakeClock,
    http: httpx.Client,
    tmp_path: Path,
) -> None:
    sign_in(client, server)
    phone = SplitlinkClient(ISSUER, tmp_path / "phone.json", http=http, clock=clock)
    sign_in(phone, server)
    listed = client.sessions()["sessions"]
    assert len(listed) == 2
    [other] = [s for s in listed if not s["current"]]
    client.end_session(other["id"])
    with pytest.raises(ClientError) as caught:
        phone.me()
    assert (caught.value.error, caught.value.status) == ("invalid_token", 401)


def test_logout_ends_the_session_and_forgets_the_tokens(
    client: SplitlinkClient, server: FakeServer, state_path: Path
) -> None:
    sign_in(client, server)
    client.logout()
    assert load_state(state_path).tokens is None
    assert all(s.ended for s in server.sessions.values())
    assert load_state(state_path).key is not None
    with pytest.raises(LocalError, match="not signed in"):
        client.me()


def test_logout_all_ends_every_session_of_the_user(
    client: SplitlinkClient,
    server: FakeServer,
    clock: FakeClock,
    http: httpx.Client,
    tmp_path: Path,
) -> None:
    sign_in(client, server)
    phone = SplitlinkClient(ISSUER, tmp_path / "phone.json", http=http, clock=clock)
    sign_in(phone, server)
    phone.logout_all()
    assert [s.request.url.path for s in server.seen][-1] == "/v1/logout/all"
    assert all(s.ended for s in server.sessions.values())
    with pytest.raises(ClientError):
        client.me()


def test_logout_with_a_token_the_server_no_longer_accepts_still_forgets_it(
    client: SplitlinkClient, server: FakeServer, state_path: Path
) -> None:
    sign_in(client, server)
    server.overrides["/v1/logout"] = httpx.Response(
        401, headers={"WWW-Authenticate": 'DPoP error="invalid_token"'}
    )
    with pytest.raises(ClientError):
        client.logout()
    assert load_state(state_path).tokens is None


def test_logout_that_fails_at_the_server_keeps_the_tokens_for_a_retry(
    client: SplitlinkClient, server: FakeServer, state_path: Path
) -> None:
    sign_in(client, server)
    server.overrides["/v1/logout"] = httpx.Response(503, headers={"Retry-After": "5"})
    with pytest.raises(ClientError) as caught:
        client.logout()
    assert (caught.value.error, caught.value.retry_after) == ("temporarily_unavailable", 5)
    assert load_state(state_path).tokens is not None
    client.logout()
    assert load_state(state_path).tokens is None


def test_bearer_token_response_is_refused(client: SplitlinkClient, server: FakeServer) -> None:
    client.start_login("alice@example.com")
    server.overrides["/oauth/token"] = httpx.Response(
        200,
        json={
            "access_token": "t",
            "token_type": "Bearer",
            "expires_in": 300,
            "refresh_token": "r",
        },
    )
    with pytest.raises(ClientError, match="not DPoP-bound"):
        client.complete_login(server.outbox["alice@example.com"])
    assert client.state.tokens is None
