"""The split-secret login end to end, in-process (SPEC.md §6)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.harness import PUBLIC_URL, Harness, running_server

pytestmark = pytest.mark.anyio


async def test_discovery_document_lists_endpoints_from_configuration(server: Harness) -> None:
    response = await server.client.get("/.well-known/oauth-authorization-server")
    assert response.status_code == 200
    meta = response.json()
    # RFC 8414 §3.3: the issuer is exactly the configured URL, not the Host the request used.
    assert meta["issuer"] == PUBLIC_URL
    assert meta["token_endpoint"] == f"{PUBLIC_URL}/oauth2/token"
    assert meta["login_start_endpoint"] == f"{PUBLIC_URL}/v1/login/start"
    assert meta["revocation_endpoint"] == f"{PUBLIC_URL}/oauth2/revoke"
    assert meta["introspection_endpoint"] == f"{PUBLIC_URL}/oauth2/introspect"
    assert meta["jwks_uri"] == f"{PUBLIC_URL}/.well-known/jwks.json"
    assert meta["dpop_signing_alg_values_supported"] == ["ES256", "EdDSA"]
    assert "urn:splitlink:params:oauth:grant-type:magic-link" in meta["grant_types_supported"]


@pytest.mark.parametrize("alg", ["EdDSA", "ES256"])
async def test_device_logs_in_with_both_halves_and_its_key(server: Harness, alg: str) -> None:
    device = server.device(alg)
    tokens = await server.login(device, "alice@example.com", device_name="Alice's phone")
    assert tokens["token_type"] == "DPoP"
    assert tokens["expires_in"] == 600
    me = await server.me(device, tokens["access_token"])
    assert me.status_code == 200, me.text
    body = me.json()
    assert body["user"]["email"] == "alice@example.com"
    assert body["session"]["device_name"] == "Alice's phone"
    assert body["session"]["key_alg"] == alg


async def test_start_answers_202_with_attempt_and_device_half(server: Harness) -> None:
    response = await server.start(server.device(), "bob@example.com")
    assert response.status_code == 202
    body = response.json()
    assert set(body) == {"attempt_id", "device_half", "expires_in", "check_phrase"}
    assert body["expires_in"] == 600
    assert response.headers["cache-control"] == "no-store"


async def test_link_is_built_from_configuration_not_the_host_header(server: Harness) -> None:
    device = server.device()
    response = await server.start(
        device,
        "carol@example.com",
        headers={"Host": "evil.example", "X-Forwarded-Host": "evil.example"},
    )
    assert response.status_code == 202
    await server.deliver()
    link = server.mail.sent[-1].link_text()
    assert link.startswith(f"{PUBLIC_URL}/l#attempt_id=")
    assert "evil" not in server.mail.sent[-1].raw.decode()


async def test_token_response_is_uncacheable(server: Harness) -> None:
    device = server.device()
    started, email_half = await server.start_and_read_link(device, "dave@example.com")
    response = await server.complete(
        device,
        attempt_id=started["attempt_id"],
        device_half=started["device_half"],
        email_half=email_half,
    )
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"


async def test_first_completed_login_creates_the_user_not_the_start(server: Harness) -> None:
    device = server.device()
    started, email_half = await server.start_and_read_link(device, "erin@example.com")
    assert server.query("SELECT COUNT(*) FROM users") == [(0,)]
    await server.complete(
        device,
        attempt_id=started["attempt_id"],
        device_half=started["device_half"],
        email_half=email_half,
    )
    assert server.query("SELECT email_canonical FROM users") == [("erin@example.com",)]


@pytest.mark.parametrize("use_dpop_nonce", [False, True])
async def test_metadata_says_whether_dpop_nonces_are_required(
    tmp_path: Path, backend: str, use_dpop_nonce: bool
) -> None:
    # SPEC.md §6.9: the document has exactly its listed members, dpop_nonce_required among them.
    async with running_server(tmp_path, backend=backend, use_dpop_nonce=use_dpop_nonce) as server:
        response = await server.client.get("/.well-known/oauth-authorization-server")
    meta = response.json()
    assert meta["dpop_nonce_required"] is use_dpop_nonce
    assert set(meta) == {
        "issuer",
        "token_endpoint",
        "login_start_endpoint",
        "revocation_endpoint",
        "introspection_endpoint",
        "jwks_uri",
        "grant_types_supported",
        "response_types_supported",
        "token_endpoint_auth_methods_supported",
        "revocation_endpoint_auth_methods_supported",
        "introspection_endpoint_auth_methods_supported",
        "dpop_signing_alg_values_supported",
        "dpop_nonce_required",
    }
