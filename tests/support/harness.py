"""The server in-process: real SQLite file, real app, an injected clock and a recording mailbox."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.app import create_app
from server.events import SecurityEvent
from server.login import GRANT_TYPE_MAGIC_LINK
from server.settings import Settings
from server.signing_keys import ensure_signing_key, open_keyring
from server.storage.database import Database
from server.storage.migrate import migrate
from server.storage.signing_keys import SigningKeyStore
from support import backends
from support.device import Device
from support.fakes import FakeClock, RecordingTransport

PUBLIC_URL = "https://auth.example.test"


async def prepare_database(settings: Settings, clock: FakeClock) -> None:
    migrate(settings.database_url)
    db = Database(settings.database_url)
    await db.connect()
    try:
        keys = SigningKeyStore(db)
        keyring = await open_keyring(keys, settings, random_bytes=os.urandom)
        await ensure_signing_key(keys, keyring, clock=clock, random_bytes=os.urandom)
    finally:
        await db.disconnect()


def test_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "public_url": PUBLIC_URL,
        "database_url": f"sqlite:///{tmp_path / 'splitlink.db'}",
        "data_dir": tmp_path,
        "dev_mailbox_console": False,
    }
    values.update(overrides)
    return Settings(**values)


@dataclass
class Harness:
    settings: Settings
    clock: FakeClock
    client: httpx.AsyncClient
    mail: RecordingTransport
    app: Any
    database_url: str
    events: list[SecurityEvent] = field(default_factory=list)

    def device(self, alg: str = "EdDSA") -> Device:
        return Device(alg, base_url=PUBLIC_URL, clock=self.clock.now)  # type: ignore[arg-type]

    async def start(
        self,
        device: Device,
        email: str,
        *,
        device_name: str | None = None,
        proof: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        body: dict[str, Any] = {"email": email}
        if device_name is not None:
            body["device_name"] = device_name
        return await self.client.post(
            "/v1/login/start",
            json=body,
            headers={"DPoP": proof or device.proof("POST", "/v1/login/start"), **(headers or {})},
        )

    async def deliver(self) -> int:
        handled: int = await self.app.state.outbox.dispatch_due()
        return handled

    async def complete(
        self,
        device: Device,
        *,
        attempt_id: str,
        device_half: str,
        email_half: str,
        proof: str | None = None,
    ) -> httpx.Response:
        return await self.client.post(
            "/oauth2/token",
            data={
                "grant_type": GRANT_TYPE_MAGIC_LINK,
                "attempt_id": attempt_id,
                "device_half": device_half,
                "email_half": email_half,
            },
            headers={"DPoP": proof or device.proof("POST", "/oauth2/token")},
        )

    async def start_and_read_link(
        self, device: Device, email: str, **kwargs: Any
    ) -> tuple[dict[str, Any], str]:
        """Start, deliver the mail, and return (start response body, email half)."""
        response = await self.start(device, email, **kwargs)
        assert response.status_code == 202, response.text
        started: dict[str, Any] = response.json()
        await self.deliver()
        link = self.mail.sent[-1].login_link()
        assert link.attempt_id == started["attempt_id"]
        return started, link.email_half

    async def complete_started(
        self, device: Device, started: dict[str, Any], email_half: str
    ) -> httpx.Response:
        """Complete the login that `started` (a start's answer) began, with its email half."""
        return await self.complete(
            device,
            attempt_id=started["attempt_id"],
            device_half=started["device_half"],
            email_half=email_half,
        )

    async def login(self, device: Device, email: str, **kwargs: Any) -> dict[str, Any]:
        started, email_half = await self.start_and_read_link(device, email, **kwargs)
        response = await self.complete_started(device, started, email_half)
        assert response.status_code == 200, response.text
        tokens: dict[str, Any] = response.json()
        return tokens

    async def me(self, device: Device, access_token: str) -> httpx.Response:
        return await self.client.get(
            "/v1/me",
            headers={
                "Authorization": f"DPoP {access_token}",
                "DPoP": device.proof("GET", "/v1/me", access_token=access_token),
            },
        )

    def record_single_statements(self, monkeypatch: pytest.MonkeyPatch) -> list[str]:
        """From now on, every statement sent on PostgreSQL's single-statement pool, in order:
        each one is a round trip."""
        statements = self.app.state.services.db._pg_statements
        sent: list[str] = []
        run = statements.run

        async def recorded(query: str, values: Mapping[str, Any]) -> list[Any]:
            sent.append(query)
            return await run(query, values)

        monkeypatch.setattr(statements, "run", recorded)
        return sent

    @property
    def backend(self) -> str:
        return "sqlite" if self.database_url.startswith("sqlite") else "postgresql"

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        return backends.query(self.database_url, sql, *params)

    def dump_database(self) -> str:
        return backends.dump(self.database_url)


@asynccontextmanager
async def running_server(
    tmp_path: Path,
    *,
    clock: FakeClock | None = None,
    backend: str = "sqlite",
    **overrides: Any,
) -> AsyncIterator[Harness]:
    if "database_url" in overrides:
        async with _running_server(tmp_path, clock=clock, **overrides) as harness:
            yield harness
        return
    with backends.database_url_for(backend, tmp_path) as database_url:
        async with _running_server(
            tmp_path, clock=clock, database_url=database_url, **overrides
        ) as harness:
            yield harness


@asynccontextmanager
async def _running_server(
    tmp_path: Path, *, clock: FakeClock | None = None, **overrides: Any
) -> AsyncIterator[Harness]:
    clock = clock or FakeClock()
    settings = test_settings(tmp_path, **overrides)
    await prepare_database(settings, clock)
    mail = RecordingTransport()
    events: list[SecurityEvent] = []
    app = create_app(
        settings,
        clock=clock,
        mail_transport=mail,
        events=events.append,
        background_tasks=False,
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield Harness(
                settings=settings,
                clock=clock,
                client=client,
                mail=mail,
                app=app,
                database_url=settings.database_url,
                events=events,
            )
