"""No answer redirects, and none names the `Host` the request carried (SPEC.md §1.4, §3.6, §11).

A redirect built from `Host` would send a client that follows it, with the halves or a refresh
token in its body, to whatever host the request named."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import httpx
import pytest
from starlette.routing import BaseRoute, Mount, Route
from support.harness import Harness

pytestmark = pytest.mark.anyio

HOSTILE_HOST = "evil.test"


def _endpoints(routes: Sequence[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(path, method) of every route of the app, mounted ones included."""
    for route in routes:
        if isinstance(route, Mount):
            yield from _endpoints(route.routes, prefix + route.path)
        elif isinstance(route, Route):
            path = prefix + route.path.replace("{session_id}", "s_unknown")
            for method in sorted(route.methods or ()):
                yield path, method


def _answer_text(response: httpx.Response) -> str:
    headers = "\n".join(f"{name}: {value}" for name, value in response.headers.multi_items())
    return headers + "\n" + response.text


async def test_no_path_with_a_trailing_slash_redirects_or_echoes_the_host(
    server: Harness,
) -> None:
    device = server.device()
    tokens = await server.login(device, "alice@example.com")
    access_token = tokens["access_token"]
    endpoints = list(_endpoints(server.app.routes))
    assert ("/v1/sessions/s_unknown", "DELETE") in endpoints
    assert ("/oauth2/token", "POST") in endpoints
    for path, method in endpoints:
        slashed = path + "/"
        # /v1/ paths are authenticated before routing: valid credentials take the request on
        # to the router, where a redirect would be made.
        headers = {"Host": HOSTILE_HOST}
        if path.startswith("/v1/"):
            headers["Authorization"] = f"DPoP {access_token}"
            headers["DPoP"] = device.proof(method, slashed, access_token=access_token)
        response = await server.client.request(method, slashed, headers=headers)
        where = f"{method} {slashed}"
        assert not response.is_redirect, where
        assert "location" not in response.headers, where
        assert HOSTILE_HOST not in _answer_text(response), where
        assert response.status_code == 404, where
        if method != "HEAD":
            assert response.json() == {
                "error": "not_found",
                "error_description": "no such endpoint or method",
            }, where
