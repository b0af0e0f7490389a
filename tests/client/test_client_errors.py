"""Server refusals become ClientError with code, description, status and Retry-After; discovery
is validated; secrets never reach logs."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
from client_fake_server import ISSUER, FakeClock, FakeServer, sign_in
from splitlink_client import ClientError, SplitlinkClient

from protocol.errors import ErrorCode, SplitlinkError


def test_server_error_carries_code_description_status_and_retry_after(
    client: SplitlinkClient, server: FakeServer
) -> None:
    server.overrides["/v1/login/start"] = httpx.Response(
        429,
        json={"error": "rate_limited", "error_description": "too many logins"},
        headers={"Retry-After": "30"},
    )
    with pytest.raises(ClientError) as caught:
        client.start_login("alice@example.com")
    error = caught.value
    assert isinstance(error, SplitlinkError)
    assert (error.error, error.description, error.status, error.retry_after) == (
        "rate_limited",
        "too many logins",
        429,
        30,
    )
    assert error.code is ErrorCode.RATE_LIMITED


def test_invalid_email_is_reported_with_the_server_code(
    client: SplitlinkClient, server: FakeServer
) -> None:
    with pytest.raises(ClientError) as caught:
        client.start_login("not-an-address")
    assert (caught.value.error, caught.value.status) == ("invalid_email", 400)
    assert caught.value.code is ErrorCode.INVALID_EMAIL


def test_unknown_server_error_code_is_kept_verbatim(
    client: SplitlinkClient, server: FakeServer
) -> None:
    server.overrides["/v1/login/start"] = httpx.Response(
        403, json={"error": "account_locked", "error_description": "ask support"}
    )
    with pytest.raises(ClientError) as caught:
        client.start_login("alice@example.com")
    assert caught.value.error == "account_locked"
    assert caught.value.code is ErrorCode.SERVER_ERROR


def test_error_without_a_json_body_gets_a_code_from_the_status(
    client: SplitlinkClient, server: FakeServer
) -> None:
    server.overrides["/v1/login/start"] = httpx.Response(502, text="<html>bad gateway</html>")
    with pytest.raises(ClientError) as caught:
        client.start_login("alice@example.com")
    assert (caught.value.error, caught.value.status) == ("server_error", 502)


def test_control_characters_in_server_text_are_neutralised(
    client: SplitlinkClient, server: FakeServer
) -> None:
    server.overrides["/v1/login/start"] = httpx.Response(
        400, json={"error": "invalid_request", "error_description": "bad\x1b[2Jthing\n"}
    )
    with pytest.raises(ClientError) as caught:
        client.start_login("alice@example.com")
    assert caught.value.description == "bad?[2Jthing?"


def test_unreachable_server_is_a_client_error_without_status(
    state_path: Path, clock: FakeClock
) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with httpx.Client(transport=httpx.MockTransport(refuse)) as http:
        client = SplitlinkClient(ISSUER, state_path, http=http, clock=clock)
        with pytest.raises(ClientError) as caught:
            client.discover()
    assert caught.value.status is None
    assert caught.value.error == "temporarily_unavailable"


def test_discovery_provides_the_endpoints(client: SplitlinkClient) -> None:
    metadata = client.discover()
    assert metadata.token_endpoint == f"{ISSUER}/oauth/token"
    assert metadata.login_start_endpoint == f"{ISSUER}/v1/login/start"
    assert metadata.dpop_signing_alg_values_supported == ("ES256", "EdDSA")
    assert client.discover() is metadata


def test_endpoints_come_from_discovery_not_from_fixed_paths(
    client: SplitlinkClient, server: FakeServer
) -> None:
    original = server._metadata

    def moved() -> dict[str, object]:
        return {**original(), "login_start_endpoint": f"{ISSUER}/elsewhere/start"}

    server._metadata = moved  # type: ignore[method-assign]
    with pytest.raises(ClientError):
        client.start_login("alice@example.com")
    assert server.seen[-1].request.url.path == "/elsewhere/start"
    assert server.seen[-1].proof is None  # refused as an unknown route before proof checks


def test_discovery_with_another_issuer_is_refused(
    client: SplitlinkClient, server: FakeServer
) -> None:
    server.metadata_issuer = "https://evil.test"
    with pytest.raises(ClientError, match="issuer") as caught:
        client.start_login("alice@example.com")
    assert caught.value.error == "invalid_response"
    assert not server.requests_to("/v1/login/start")


def test_key_algorithm_the_server_does_not_accept_is_refused(
    client: SplitlinkClient, server: FakeServer
) -> None:
    original = server._metadata

    def es256_only() -> dict[str, object]:
        return {**original(), "dpop_signing_alg_values_supported": ["ES256"]}

    server._metadata = es256_only  # type: ignore[method-assign]
    with pytest.raises(ClientError, match="does not accept EdDSA"):
        client.start_login("alice@example.com", alg="EdDSA")
    assert not server.requests_to("/v1/login/start")


def test_secrets_never_reach_the_logs(
    client: SplitlinkClient, server: FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sign_in(client, server)
    client.me()
    client.refresh()
    client.sessions()
    client.logout()
    assert client.state.key is not None
    logged = caplog.text
    assert logged  # httpx did log the requests
    for secret in [*server.issued_secrets(), client.state.key.private_jwk()["d"]]:
        assert secret not in logged
