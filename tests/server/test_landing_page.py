"""The link's landing page is inert: scanners that open it change nothing (SPEC.md §5.4;
threats.md C3, C4)."""

from __future__ import annotations

import pytest
from support.harness import Harness

pytestmark = pytest.mark.anyio

SCANNER = {"User-Agent": "Mozilla/5.0 (compatible; HeadlessChrome; SafeLinks)"}


async def test_scanner_requests_leave_the_database_byte_identical(server: Harness) -> None:
    device = server.device()
    started, email_half = await server.start_and_read_link(device, "a@example.com")
    link = server.mail.sent[-1].link_text()
    path = link.removeprefix(server.settings.public_url)
    before = server.dump_database()
    for method in ("GET", "HEAD", "OPTIONS", "GET"):
        response = await server.client.request(method, path, headers=SCANNER)
        assert response.status_code in (200, 204)
    assert server.dump_database() == before
    completed = await server.complete(
        device,
        attempt_id=started["attempt_id"],
        device_half=started["device_half"],
        email_half=email_half,
    )
    assert completed.status_code == 200


async def test_landing_page_is_inert_and_holds_no_secret(server: Harness) -> None:
    started, email_half = await server.start_and_read_link(server.device(), "a@example.com")
    response = await server.client.get("/l")
    assert response.status_code == 200
    assert response.headers["referrer-policy"] == "no-referrer"
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert "<script" not in response.text
    assert email_half not in response.text
    assert started["device_half"] not in response.text
