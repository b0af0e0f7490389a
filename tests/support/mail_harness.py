"""The server in-process with its real mail wiring: settings name an SMTP server (a test sink),
and the app builds its own SMTP transport from them, exactly as `splitlink serve` does.

Everything else is the ordinary harness: an injected clock, a real database (SQLite file or a
fresh PostgreSQL database), and `deliver()` to run the outbox dispatcher once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from protocol.link import parse_login_link
from server.app import create_app
from server.events import SecurityEvent
from server.mail import orders
from server.mail.compose import MailComposer
from support import backends
from support.device import Device
from support.fakes import FakeClock, RecordingTransport
from support.harness import Harness, prepare_database, test_settings
from support.smtp_sink import Delivery, SmtpSink


@asynccontextmanager
async def mail_server(
    tmp_path: Path,
    sink: SmtpSink,
    *,
    backend: str = "sqlite",
    clock: FakeClock | None = None,
    database_url: str | None = None,
    **overrides: Any,
) -> AsyncIterator[Harness]:
    """A harness whose mail goes over SMTP to `sink`. `harness.mail` stays empty: read the
    sink's deliveries instead."""
    clock = clock or FakeClock()
    async with AsyncExitStack() as stack:
        if database_url is None:
            database_url = stack.enter_context(backends.database_url_for(backend, tmp_path))
        settings = test_settings(
            tmp_path, database_url=database_url, **{**sink.settings(), **overrides}
        )
        await prepare_database(settings, clock)
        events: list[SecurityEvent] = []
        app = create_app(settings, clock=clock, events=events.append, background_tasks=False)
        await stack.enter_async_context(app.router.lifespan_context(app))
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
        client = await stack.enter_async_context(
            httpx.AsyncClient(transport=transport, base_url="http://testserver")
        )
        yield Harness(
            settings=settings,
            clock=clock,
            client=client,
            mail=RecordingTransport(),
            app=app,
            database_url=database_url,
            events=events,
        )


def delivery_for(sink: SmtpSink, attempt_id: str) -> Delivery:
    matches = [d for d in sink.deliveries if attempt_id in (d.link() or "")]
    assert len(matches) == 1, f"{len(matches)} deliveries for attempt {attempt_id}"
    return matches[0]


async def start(server: Harness, device: Device, email: str, **kwargs: Any) -> dict[str, Any]:
    response = await server.start(device, email, **kwargs)
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


async def complete_from(
    server: Harness, device: Device, started: dict[str, Any], delivery: Delivery
) -> httpx.Response:
    link = delivery.link()
    assert link is not None
    parsed = parse_login_link(link)
    assert parsed.attempt_id == started["attempt_id"]
    return await server.complete(
        device,
        attempt_id=started["attempt_id"],
        device_half=started["device_half"],
        email_half=parsed.email_half,
    )


def outbox_rows(server: Harness) -> list[tuple[Any, ...]]:
    """(id, kind, attempt_id, status, tries, not_before), oldest first."""
    return server.query(
        "SELECT id, kind, attempt_id, status, tries, not_before FROM outbox ORDER BY created_at, id"
    )


def tries_of(server: Harness, outbox_id: str) -> list[tuple[Any, ...]]:
    """(try_number, tried_at, outcome, detail) of one row, in order."""
    return server.query(
        "SELECT try_number, tried_at, outcome, detail FROM outbox_tries WHERE outbox_id = ? "
        "ORDER BY try_number",
        outbox_id,
    )


async def deliver_until_idle(server: Harness, *, max_rounds: int = 50) -> None:
    """Run the dispatcher, moving the fake clock to the next due try, until nothing is queued.
    Backoff waits are simulated time: no test sleeps through them."""
    for _ in range(max_rounds):
        await server.deliver()
        pending = server.query("SELECT MIN(not_before) FROM outbox WHERE status = 'queued'")
        next_try = pending[0][0]
        if next_try is None:
            return
        server.clock.advance(max(0, int(next_try) - server.clock.now()))
    raise AssertionError("the outbox did not drain")


def record_rendering(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every QR code drawn and every message composed from now on, by name, in order."""
    calls: list[str] = []

    def counting(name: str, original: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            return original(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(orders, "qr_png", counting("qr_png", orders.qr_png))
    for name in ("login_link", "no_account", "new_device"):
        monkeypatch.setattr(MailComposer, name, counting(name, getattr(MailComposer, name)))
    return calls
