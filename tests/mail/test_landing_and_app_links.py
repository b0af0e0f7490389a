"""The landing page with and without an app scheme, and the app association files (SPEC.md §5.4,
§6.10; threats.md C3, C4, E2)."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from support.harness import running_server

from server.settings import Settings

pytestmark = pytest.mark.anyio

SCANNER = {"User-Agent": "Mozilla/5.0 (compatible; HeadlessChrome; SafeLinks)"}
APPLE_IDS = ["ABCDE12345.com.example.app", "ABCDE12345.com.example.app.beta"]
FINGERPRINT = ":".join(["AB"] * 31 + ["CD"])
ANDROID = [{"package_name": "com.example.app", "sha256_cert_fingerprints": [FINGERPRINT]}]


async def test_landing_page_without_an_app_scheme_tells_how_to_finish(tmp_path: Path) -> None:
    async with running_server(tmp_path, app_name="Example & Co") as server:
        response = await server.client.get("/l")
    assert response.status_code == 200
    page = response.text
    assert "Example &amp; Co" in page
    assert "Tap the link in the email there" in page
    assert "Scan the QR code in the email" in page
    assert "://login" not in page
    for inert in ("<script", "<form", " style=", "<iframe", "<img", "http"):
        assert inert not in page


async def test_landing_page_with_an_app_scheme_offers_to_open_the_app_without_the_secret(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path, app_link_scheme="MyApp") as server:
        device = server.device()
        started, email_half = await server.start_and_read_link(device, "a@example.com")
        link = server.mail.sent[-1].link_text()
        path = link.removeprefix(server.settings.public_url)
        before = server.dump_database()
        responses = [
            await server.client.request(method, path, headers=SCANNER)
            for method in ("GET", "HEAD", "OPTIONS", "GET")
        ]
        after = server.dump_database()
        completed = await server.complete(
            device,
            attempt_id=started["attempt_id"],
            device_half=started["device_half"],
            email_half=email_half,
        )
    page = responses[0].text
    assert '<a href="myapp://login">Open splitlink</a>' in page
    assert email_half not in page and started["attempt_id"] not in page
    assert "<script" not in page
    for response in responses:
        assert response.status_code in (200, 204)
        assert response.headers["content-security-policy"].startswith("default-src 'none'")
        assert response.headers["referrer-policy"] == "no-referrer"
        assert "location" not in response.headers
    assert after == before  # scanners change nothing (C3)
    assert completed.status_code == 200


async def test_the_csp_allows_the_served_style_by_its_hash_and_nothing_more(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path, app_link_scheme="myapp") as server:
        responses = [await server.client.request(m, "/l") for m in ("GET", "HEAD", "OPTIONS")]
    page = responses[0].text
    (style,) = re.findall(r"<style>(.*?)</style>", page, flags=re.DOTALL)
    assert page.count("<style") == 1
    digest = base64.b64encode(hashlib.sha256(style.encode("utf-8")).digest()).decode()
    expected = (
        f"default-src 'none'; style-src 'sha256-{digest}'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    )
    for response in responses:
        assert response.headers["content-security-policy"] == expected
    # The style fetches nothing: no url(), no @import.
    assert "url(" not in style and "@import" not in style


def _words(text: str) -> str:
    return " ".join(text.split())


async def test_the_landing_page_names_the_app_and_says_what_the_mail_says(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path, app_name="Example & Co") as server:
        page = (await server.client.get("/l")).text
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert "<title>Finish signing in to Example &amp; Co</title>" in page
    assert 'aria-hidden="true">E</span>Example &amp; Co</p>' in page
    templates = Path(__file__).parents[2] / "server" / "mail" / "templates"
    mail_text = _words((templates / "login_link.txt").read_text())
    mail_html = _words((templates / "login_link.html").read_text())
    for sentence in (
        "works only in the app that asked for it",
        "with that phone's camera",
        "If this wasn't you, ignore this email: nobody can sign in with it alone.",
    ):
        assert sentence in _words(page)
        assert sentence in mail_html
    assert "works only in the app that asked for it" in mail_text
    assert "If this wasn't you, ignore this email: nobody can sign in with it alone." in mail_text


@pytest.mark.parametrize("scheme", ["https", "javascript", "my app", "1app", "x"])
def test_an_app_scheme_that_is_not_an_app_scheme_is_refused(scheme: str) -> None:
    with pytest.raises(ValidationError):
        Settings(app_link_scheme=scheme)


async def test_association_files_are_served_from_settings_as_json(tmp_path: Path) -> None:
    async with running_server(tmp_path, apple_app_ids=APPLE_IDS, android_apps=ANDROID) as server:
        apple = await server.client.get("/.well-known/apple-app-site-association")
        android = await server.client.get("/.well-known/assetlinks.json")
    assert apple.status_code == 200 and android.status_code == 200
    for response in (apple, android):
        assert response.headers["content-type"] == "application/json"
        assert "location" not in response.headers
    details = apple.json()["applinks"]["details"]
    assert details == [
        {
            "appIDs": APPLE_IDS,
            "components": [{"/": "/l", "comment": "login links"}],
            "paths": ["/l"],
        }
    ]
    assert android.json() == [
        {
            "relation": ["delegate_permission/common.handle_all_urls"],
            "target": {
                "namespace": "android_app",
                "package_name": "com.example.app",
                "sha256_cert_fingerprints": [FINGERPRINT],
            },
        }
    ]


async def test_association_files_are_404_when_not_configured(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        for path in ("/.well-known/apple-app-site-association", "/.well-known/assetlinks.json"):
            response = await server.client.get(path)
            assert response.status_code == 404
            assert response.json()["error"] == "not_found"


@pytest.mark.parametrize(
    "overrides",
    [
        {"apple_app_ids": ["com.example.app"]},
        {"apple_app_ids": ["abcde12345.com.example.app"]},
        {"android_apps": [{"package_name": "app", "sha256_cert_fingerprints": [FINGERPRINT]}]},
        {"android_apps": [{"package_name": "com.example", "sha256_cert_fingerprints": ["AB"]}]},
        {"android_apps": [{"package_name": "com.example", "sha256_cert_fingerprints": []}]},
    ],
)
def test_malformed_app_association_settings_are_refused(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Settings(**overrides)
