"""Email addresses at the start endpoint (SPEC.md §5.1; threats.md D1-D8)."""

from __future__ import annotations

import json

import pytest
from support.harness import Harness

pytestmark = pytest.mark.anyio

REFUSED = [
    pytest.param("victim@example.com\r\nBcc: evil@example.net", id="crlf-header-injection"),
    pytest.param("victim@example.com\n", id="trailing-lf"),
    pytest.param("vic\x00tim@example.com", id="nul"),
    pytest.param("victim\u202e@example.com", id="bidi-override"),
    pytest.param("victim@example.com,attacker@example.net", id="comma-list"),
    pytest.param("victim@example.com;attacker@example.net", id="semicolon-list"),
    pytest.param("Victim <victim@example.com>", id="display-name"),
    pytest.param('"e@attacker.net"@victim.example', id="quoted-local-part"),
    pytest.param("alice@example.org(<bob@example.org>", id="parser-differential"),
    pytest.param("m\u0131ke@example.org", id="dotless-i"),
    pytest.param("\u212aate@example.org", id="kelvin-sign"),
    pytest.param("mike\uff20example.org", id="fullwidth-at"),
    pytest.param("a" * 65 + "@example.com", id="local-part-over-64"),
    pytest.param("a@" + "b" * 250 + ".com", id="over-254"),
    pytest.param("", id="empty"),
    # RFC 2047 encoded-words, which mail software may decode into another address (§5.1).
    pytest.param("=?utf-8?q?victim?=@example.com", id="encoded-word-q"),
    pytest.param("=?UTF-8?B?dmljdGlt?=@example.com", id="encoded-word-b"),
    pytest.param("=?uTf-8?Q?victim?=@example.com", id="encoded-word-mixed-case"),
    pytest.param("=?x?q?e=40attacker.example=3e=00?=@victim.example", id="encoded-word-at"),
    pytest.param("pre.=?utf-8?q?x?=.post@example.com", id="encoded-word-inside"),
    pytest.param('"=?utf-8?q?victim?="@example.com', id="encoded-word-quoted"),
]


@pytest.mark.parametrize("address", REFUSED)
async def test_refused_addresses_get_invalid_email_and_leave_no_trace(
    server: Harness, address: str
) -> None:
    response = await server.start(server.device(), address)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_email"
    assert server.query("SELECT COUNT(*) FROM login_attempts") == [(0,)]
    await server.deliver()
    assert server.mail.sent == []


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"email": ["victim@example.com", "attacker@example.net"]}, id="array"),
        pytest.param({"email": 42}, id="number"),
        pytest.param({}, id="missing"),
    ],
)
async def test_email_must_be_one_string(server: Harness, body: dict[str, object]) -> None:
    device = server.device()
    response = await server.client.post(
        "/v1/login/start", json=body, headers={"DPoP": device.proof("POST", "/v1/login/start")}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_email"


async def test_spellings_of_one_address_reach_one_account_at_its_stored_address(
    server: Harness,
) -> None:
    await server.login(server.device(), "Mike@Example.org")
    for spelling in ("mike@example.org", "MIKE@EXAMPLE.ORG", "mike@EXAMPLE.org"):
        await server.start(server.device(), spelling)
    await server.deliver()
    assert {mail.recipient for mail in server.mail.sent} == {"Mike@example.org"}
    assert server.query("SELECT COUNT(*) FROM users") == [(1,)]


async def test_idn_domains_are_one_account_in_a_label_form(server: Harness) -> None:
    first = await server.login(server.device(), "user@m\u00fcnchen.de")
    second = await server.login(server.device(), "user@xn--mnchen-3ya.de")
    assert first["access_token"] != second["access_token"]
    assert server.query("SELECT email_canonical FROM users") == [("user@xn--mnchen-3ya.de",)]


async def test_hostile_device_name_is_escaped_in_the_html_mail(server: Harness) -> None:
    await server.start(server.device(), "a@example.com", device_name='"><a href=//evil>x</a>')
    await server.deliver()
    (mail,) = server.mail.sent
    assert "<a href=//evil>" not in mail.html
    # Escaped, and without the slashes that would make a link of it (server/mail/inert.py).
    assert "&quot;&gt;&lt;a href= evil&gt;x&lt; a&gt;" in mail.html


@pytest.mark.parametrize(
    "name", ["line\r\nBcc: evil@example.net", "a" * 65, "\u202eevil", "\ud800", 7]
)
async def test_device_name_with_control_characters_or_too_long_is_refused(
    server: Harness, name: object
) -> None:
    device = server.device()
    response = await server.client.post(
        "/v1/login/start",
        # ASCII JSON, so that a lone surrogate travels as the escape \ud800.
        content=json.dumps({"email": "a@example.com", "device_name": name}).encode(),
        headers={
            "DPoP": device.proof("POST", "/v1/login/start"),
            "Content-Type": "application/json",
        },
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
