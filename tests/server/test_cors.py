"""CORS for web apps on other origins (SPEC.md §10, `cors_origins`): a listed origin gets what
the SDK needs, any other origin gets no CORS header at all, and without the setting nothing
changes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError
from support.harness import Harness, running_server

from server.settings import Settings

pytestmark = pytest.mark.anyio

WEB_APP = "https://app.example.com"
STRANGER = "https://evil.example.net"
METADATA = "/.well-known/oauth-authorization-server"


@pytest.fixture
async def cors_server(tmp_path: Path, backend: str) -> AsyncIterator[Harness]:
    async with running_server(tmp_path, backend=backend, cors_origins=[WEB_APP]) as harness:
        yield harness


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("access-control-")}


def preflight(origin: str, method: str, headers: str) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers,
    }


def listed(value: str) -> set[str]:
    return {item.strip().lower() for item in value.split(",")}


async def test_a_listed_origin_can_read_the_headers_the_sdk_needs(cors_server: Harness) -> None:
    response = await cors_server.client.get(METADATA, headers={"Origin": WEB_APP})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == WEB_APP
    exposed = listed(response.headers["access-control-expose-headers"])
    assert exposed == {"dpop-nonce", "www-authenticate", "date"}
    assert "origin" in listed(response.headers["vary"])
    assert "access-control-allow-credentials" not in response.headers


async def test_a_preflight_from_a_listed_origin_is_answered_before_authentication(
    cors_server: Harness,
) -> None:
    for path, method, headers in [
        ("/v1/me", "GET", "authorization, dpop"),
        ("/v1/sessions/abc", "DELETE", "authorization, dpop"),
        ("/v1/login/start", "POST", "dpop, content-type"),
        ("/oauth2/token", "POST", "dpop, content-type"),
    ]:
        response = await cors_server.client.options(
            path, headers=preflight(WEB_APP, method, headers)
        )
        assert response.status_code == 200, (path, response.text)
        assert response.headers["access-control-allow-origin"] == WEB_APP
        assert method in response.headers["access-control-allow-methods"]
        assert {"authorization", "dpop", "content-type"} <= listed(
            response.headers["access-control-allow-headers"]
        )
        assert response.headers["x-content-type-options"] == "nosniff"


async def test_an_authentication_failure_reaches_a_listed_origin_with_its_challenge(
    cors_server: Harness,
) -> None:
    response = await cors_server.client.get("/v1/me", headers={"Origin": WEB_APP})
    assert response.status_code == 401
    assert response.headers["access-control-allow-origin"] == WEB_APP
    assert "www-authenticate" in listed(response.headers["access-control-expose-headers"])


async def test_a_signed_in_request_from_a_listed_origin_gets_the_cors_headers(
    cors_server: Harness,
) -> None:
    device = cors_server.device()
    tokens = await cors_server.login(device, "a@example.com")
    response = await cors_server.client.get(
        "/v1/me",
        headers={
            "Origin": WEB_APP,
            "Authorization": f"DPoP {tokens['access_token']}",
            "DPoP": device.proof("GET", "/v1/me", access_token=tokens["access_token"]),
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == WEB_APP


async def test_an_origin_not_on_the_list_gets_no_cors_header(cors_server: Harness) -> None:
    for origin in (STRANGER, WEB_APP + ".evil.example", "null", WEB_APP.upper()):
        response = await cors_server.client.get(METADATA, headers={"Origin": origin})
        assert response.status_code == 200
        assert cors_headers(response) == {}
        refused = await cors_server.client.options(
            "/v1/me", headers=preflight(origin, "GET", "authorization, dpop")
        )
        assert cors_headers(refused) == {}
        assert refused.status_code == 401


async def test_two_origin_headers_get_no_cors_header(cors_server: Harness) -> None:
    response = await cors_server.client.get(
        METADATA, headers=[("Origin", WEB_APP), ("Origin", STRANGER)]
    )
    assert cors_headers(response) == {}


async def test_without_cors_origins_no_cors_header_is_ever_sent(server: Harness) -> None:
    assert server.settings.cors_origins == []
    response = await server.client.get(METADATA, headers={"Origin": WEB_APP})
    assert cors_headers(response) == {}
    refused = await server.client.options(
        "/oauth2/token", headers=preflight(WEB_APP, "POST", "dpop, content-type")
    )
    assert cors_headers(refused) == {}


def test_cors_origins_are_normalized_as_browsers_send_origin() -> None:
    settings = Settings(cors_origins=["HTTPS://App.Example.com:443/", "http://localhost:5173"])
    assert settings.cors_origins == ["https://app.example.com", "http://localhost:5173"]


@pytest.mark.parametrize(
    "origin", ["*", "https://app.example.com/path", "app.example.com", "ftp://app.example.com"]
)
def test_a_cors_origin_must_be_an_http_origin(origin: str) -> None:
    with pytest.raises(ValidationError):
        Settings(cors_origins=[origin])


async def test_a_cacheable_answer_varies_by_origin_whoever_asks(cors_server: Harness) -> None:
    """A shared cache filled by a request without `Origin` (or from a stranger) must not serve
    that answer, without CORS headers, to a listed web app."""
    for headers in ({}, {"Origin": STRANGER}, {"Origin": WEB_APP}):
        response = await cors_server.client.get(METADATA, headers=headers)
        assert response.headers["cache-control"].startswith("public")
        assert "origin" in response.headers.get("vary", "").lower(), headers
