"""Every request is logged once, with the id answered in `X-Request-ID`, its route's template and
no value a client sent (SPEC.md §6.12, §10)."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path

import pytest
from support.harness import running_server

from server.http import UNMATCHED_ROUTE
from server.request_id import request_id_for

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _request_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "splitlink.requests" and hasattr(r, "route")]


async def test_a_request_line_names_the_route_template_never_the_ids_query_or_headers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="splitlink")
    async with running_server(tmp_path) as server:
        response = await server.client.delete(
            "/v1/sessions/some-session-id?code=query-value",
            headers={"Authorization": "DPoP header-value", "DPoP": "proof-value"},
        )
        missing = await server.client.get("/nothing/here/secret-path")
    assert response.status_code == 401
    request_id = response.headers["x-request-id"]
    lines = _request_lines(caplog)
    first, second = lines
    assert first.route == "/v1/sessions/{session_id}"  # type: ignore[attr-defined]
    assert first.status == 401  # type: ignore[attr-defined]
    assert first.method == "DELETE"  # type: ignore[attr-defined]
    assert first.client == "203.0.113.7"  # type: ignore[attr-defined]
    assert first.request_id == request_id  # type: ignore[attr-defined]
    assert second.route == UNMATCHED_ROUTE  # type: ignore[attr-defined]
    assert second.request_id == missing.headers["x-request-id"]  # type: ignore[attr-defined]
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    for secret in ("some-session-id", "query-value", "header-value", "proof-value", "secret-path"):
        assert secret not in text


async def test_each_request_gets_a_fresh_id_that_an_untrusted_client_cannot_choose(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path) as server:
        first = await server.client.get("/openapi.json", headers={"X-Request-ID": "chosen-id"})
        second = await server.client.get("/openapi.json")
    assert first.headers["x-request-id"] != "chosen-id"
    assert len(first.headers["x-request-id"]) >= 16
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


async def test_a_trusted_proxy_passes_its_request_id_on_when_it_is_short_and_plain(
    tmp_path: Path,
) -> None:
    # The in-process client's peer address is 203.0.113.7.
    async with running_server(tmp_path, trusted_proxies=["203.0.113.0/24"]) as server:
        kept = await server.client.get("/openapi.json", headers={"X-Request-ID": "lb-4f2a:9"})
        long = await server.client.get("/openapi.json", headers={"X-Request-ID": "a" * 65})
        odd = await server.client.get("/openapi.json", headers={"X-Request-ID": "a b\tc"})
    assert kept.headers["x-request-id"] == "lb-4f2a:9"
    assert long.headers["x-request-id"] != "a" * 65
    assert odd.headers["x-request-id"] != "a b\tc"


def test_a_proxy_reached_through_a_dual_stack_listener_passes_its_request_id_on() -> None:
    proxies = [ipaddress.ip_network("10.0.0.0/8")]
    assert request_id_for("lb-1", peer="::ffff:10.0.0.1", trusted_proxies=proxies) == "lb-1"
    assert request_id_for("lb-1", peer="::ffff:192.0.2.1", trusted_proxies=proxies) != "lb-1"


async def test_a_security_event_carries_the_id_of_the_request_that_caused_it(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path) as server:
        device = server.device()
        response = await server.start(device, "ella@example.com")
    assert response.status_code == 202
    (event,) = [e for e in server.events if e.name == "login.started"]
    assert event.request_id == response.headers["x-request-id"]


async def test_x_forwarded_for_without_trusted_proxies_is_ignored_and_warned_about_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="splitlink")
    async with running_server(tmp_path) as server:
        for _ in range(3):
            await server.client.get("/openapi.json", headers={"X-Forwarded-For": "198.51.100.9"})
    warnings = [r for r in caplog.records if "X-Forwarded-For" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert all(r.client == "203.0.113.7" for r in _request_lines(caplog))  # type: ignore[attr-defined]
