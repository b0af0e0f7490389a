"""Starting and completing a login: one device key, fresh proofs, the pasted link checked first."""

from __future__ import annotations

import itertools
from pathlib import Path

import httpx
import pytest
from client_fake_server import ISSUER, FakeClock, FakeServer, sign_in
from splitlink_client import LocalError, SplitlinkClient, load_state, save_state
from splitlink_client.errors import ClientError

from protocol.encoding import b64url_decode, b64url_encode
from protocol.keys import Algorithm, SigningKey
from protocol.link import build_login_link

OTHER_ATTEMPT_ID = b64url_encode(b"\x01" * 16)
SOME_HALF = b64url_encode(b"\x02" * 32)


@pytest.mark.parametrize("alg", ["EdDSA", "ES256"])
def test_login_creates_key_on_first_use_and_signs_in_with_it(
    client: SplitlinkClient, server: FakeServer, state_path: Path, alg: Algorithm
) -> None:
    started = client.start_login("alice@example.com", "laptop", alg=alg)
    assert started.key_created and started.alg == alg
    assert started.expires_in == 900
    key = load_state(state_path).key
    assert key is not None and key.alg == alg
    signed_in = client.complete_login(server.outbox["alice@example.com"])
    assert signed_in.email == "alice@example.com"
    state = load_state(state_path)
    assert state.pending is None
    assert state.tokens is not None
    assert client.me()["user"] == {"email": "alice@example.com"}


def test_start_and_complete_are_proven_by_the_same_key_thumbprint(
    client: SplitlinkClient, server: FakeServer
) -> None:
    sign_in(client, server)
    start = server.requests_to("/v1/login/start")[0].proof
    token = server.requests_to("/oauth/token")[0].proof
    assert start is not None and token is not None
    assert start.jkt == token.jkt
    assert client.state.key is not None
    assert start.jkt == client.state.key.public.thumbprint


def test_second_login_reuses_the_existing_key(client: SplitlinkClient, server: FakeServer) -> None:
    client.start_login("alice@example.com")
    again = client.start_login("alice@example.com")
    assert not again.key_created
    assert len({p.jkt for p in server.proofs}) == 1


def test_asking_for_another_algorithm_than_the_existing_key_is_refused(
    client: SplitlinkClient, server: FakeServer
) -> None:
    client.start_login("alice@example.com", alg="EdDSA")
    with pytest.raises(LocalError, match="already has an EdDSA key"):
        client.start_login("alice@example.com", alg="ES256")
    assert len(server.requests_to("/v1/login/start")) == 1


def test_start_login_sends_email_and_device_name_as_json_with_a_post_proof(
    client: SplitlinkClient, server: FakeServer
) -> None:
    client.start_login("alice@example.com", "Alice's laptop")
    [seen] = server.requests_to("/v1/login/start")
    assert seen.request.headers["Content-Type"] == "application/json"
    assert seen.request.read() == b'{"email":"alice@example.com","device_name":"Alice\'s laptop"}'
    assert seen.proof is not None
    assert (seen.proof.htm, seen.proof.htu) == ("POST", f"{ISSUER}/v1/login/start")


def test_device_name_is_omitted_when_not_given(client: SplitlinkClient, server: FakeServer) -> None:
    client.start_login("alice@example.com")
    [seen] = server.requests_to("/v1/login/start")
    assert seen.request.read() == b'{"email":"alice@example.com"}'


def test_complete_sends_the_magic_link_grant_form_with_both_halves(
    client: SplitlinkClient, server: FakeServer
) -> None:
    client.start_login("alice@example.com")
    pending = client.state.pending
    assert pending is not None
    client.complete_login(server.outbox["alice@example.com"])
    [seen] = server.requests_to("/oauth/token")
    form = dict(httpx.QueryParams(seen.request.read().decode()))
    attempt = server.attempts[pending.attempt_id]
    assert form == {
        "grant_type": "urn:splitlink:params:oauth:grant-type:magic-link",
        "attempt_id": pending.attempt_id,
        "device_half": attempt.device_half,
        "email_half": attempt.email_half,
    }


def test_pasted_link_with_another_attempt_id_is_refused_before_any_request(
    client: SplitlinkClient, server: FakeServer
) -> None:
    client.start_login("alice@example.com")
    before = len(server.seen)
    link = build_login_link(public_url=ISSUER, attempt_id=OTHER_ATTEMPT_ID, email_half=SOME_HALF)
    with pytest.raises(LocalError, match="another login attempt"):
        client.complete_login(link)
    assert len(server.seen) == before
    assert client.state.pending is not None


def test_complete_without_a_pending_login_is_refused_before_any_request(
    client: SplitlinkClient, server: FakeServer
) -> None:
    link = build_login_link(public_url=ISSUER, attempt_id=OTHER_ATTEMPT_ID, email_half=SOME_HALF)
    with pytest.raises(LocalError, match="no login is pending"):
        client.complete_login(link)
    assert server.seen == []


@pytest.mark.parametrize(
    "link",
    [
        "https://splitlink.test/l",
        "https://splitlink.test/l#attempt_id=short&email_half=short",
        f"https://splitlink.test/l?attempt_id={OTHER_ATTEMPT_ID}&email_half={SOME_HALF}",
    ],
)
def test_malformed_link_is_refused_before_any_request(
    client: SplitlinkClient, server: FakeServer, link: str
) -> None:
    client.start_login("alice@example.com")
    before = len(server.seen)
    with pytest.raises(LocalError, match="not a splitlink login link"):
        client.complete_login(link)
    assert len(server.seen) == before


def test_pasted_link_is_accepted_with_surrounding_whitespace(
    client: SplitlinkClient, server: FakeServer
) -> None:
    client.start_login("alice@example.com")
    client.complete_login("  " + server.outbox["alice@example.com"] + "\n")
    assert client.state.tokens is not None


def test_complete_with_a_replaced_key_is_refused_by_the_server(
    client: SplitlinkClient, server: FakeServer, state_path: Path, http: httpx.Client
) -> None:
    client.start_login("alice@example.com")
    state = load_state(state_path)
    state.key = SigningKey.generate("EdDSA", random_bytes=lambda n: b"\x07" * n)
    save_state(state_path, state)
    other = SplitlinkClient(ISSUER, state_path, http=http, clock=server.clock)
    with pytest.raises(ClientError) as caught:
        other.complete_login(server.outbox["alice@example.com"])
    assert (caught.value.error, caught.value.status) == ("invalid_grant", 400)


def test_each_request_carries_a_fresh_jti_of_128_random_bits(
    client: SplitlinkClient, server: FakeServer
) -> None:
    sign_in(client, server)
    client.me()
    client.me()
    client.refresh()
    client.sessions()
    jtis = [p.jti for p in server.proofs]
    assert len(jtis) == 6
    assert len(set(jtis)) == len(jtis)
    assert all(len(b64url_decode(jti)) == 16 for jti in jtis)


def test_proofs_use_the_injected_clock_and_randomness(
    server: FakeServer, clock: FakeClock, state_path: Path, http: httpx.Client
) -> None:
    counter = itertools.count(1)

    def random_bytes(n: int) -> bytes:
        return next(counter).to_bytes(n, "big")

    client = SplitlinkClient(ISSUER, state_path, http=http, clock=clock, random_bytes=random_bytes)
    client.start_login("alice@example.com")  # draw 1: the Ed25519 seed
    clock.advance(7)
    client.complete_login(server.outbox["alice@example.com"])
    start, token = server.proofs
    assert start.jti == b64url_encode((2).to_bytes(16, "big"))
    assert token.jti == b64url_encode((3).to_bytes(16, "big"))
    assert token.iat == start.iat + 7 == clock.now


def test_resource_proofs_carry_ath_method_and_url(
    client: SplitlinkClient, server: FakeServer
) -> None:
    sign_in(client, server)
    client.me()
    client.end_session(next(iter(server.sessions)))
    me, end = server.requests_to("/v1/me")[0], server.seen[-1]
    assert me.proof is not None and end.proof is not None
    assert (me.proof.htm, me.proof.htu) == ("GET", f"{ISSUER}/v1/me")
    assert end.proof.htm == "DELETE"
    assert me.request.headers["Authorization"].startswith("DPoP ")


@pytest.mark.parametrize("state", ["consumed", "locked", "expired"])
def test_a_finished_attempt_is_reported_by_its_state_and_forgotten(
    client: SplitlinkClient, server: FakeServer, state: str
) -> None:
    # SPEC.md §6.2: the attempt can never be completed, so the pending login goes.
    client.start_login("alice@example.com")
    server.overrides["/oauth/token"] = httpx.Response(
        400,
        json={
            "error": "invalid_grant",
            "error_description": f"the login attempt is {state}; start a new login",
            "attempt_state": state,
        },
    )
    with pytest.raises(ClientError) as caught:
        client.complete_login(server.outbox["alice@example.com"])
    assert (caught.value.error, caught.value.attempt_state) == ("invalid_grant", state)
    assert client.state.pending is None
    assert load_state(client.state_path).pending is None


def test_a_generic_invalid_grant_keeps_the_pending_login(
    client: SplitlinkClient, server: FakeServer
) -> None:
    # A wrong link was pasted, say: the right one may still come.
    client.start_login("alice@example.com")
    server.overrides["/oauth/token"] = httpx.Response(
        400,
        json={
            "error": "invalid_grant",
            "error_description": "the login attempt cannot be completed; start a new login",
        },
    )
    with pytest.raises(ClientError) as caught:
        client.complete_login(server.outbox["alice@example.com"])
    assert caught.value.attempt_state is None
    assert client.state.pending is not None


def test_attempt_state_is_read_only_from_an_invalid_grant(
    client: SplitlinkClient, server: FakeServer
) -> None:
    client.start_login("alice@example.com")
    server.overrides["/oauth/token"] = httpx.Response(
        400, json={"error": "invalid_request", "error_description": "x", "attempt_state": "locked"}
    )
    with pytest.raises(ClientError) as caught:
        client.complete_login(server.outbox["alice@example.com"])
    assert caught.value.attempt_state is None
    assert client.state.pending is not None


def test_a_link_with_extra_fragment_names_still_completes(
    client: SplitlinkClient, server: FakeServer
) -> None:
    # SPEC.md §5.4: names other than attempt_id and email_half are ignored.
    client.start_login("alice@example.com")
    client.complete_login(server.outbox["alice@example.com"] + "&v=2&lang=en")
    assert client.state.tokens is not None


def test_a_link_repeating_an_extra_fragment_name_is_refused_before_any_request(
    client: SplitlinkClient, server: FakeServer
) -> None:
    client.start_login("alice@example.com")
    before = len(server.seen)
    with pytest.raises(LocalError, match="not a splitlink login link"):
        client.complete_login(server.outbox["alice@example.com"] + "&v=2&v=2")
    assert len(server.seen) == before
