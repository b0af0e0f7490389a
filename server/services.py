"""Everything a request handler needs, built once per process by the application's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from server.clock import Clock, RandomBytes
from server.dpop.guard import ResourceGuard
from server.dpop.proof import DPoPGuard
from server.events import EventSink
from server.keyring import Keyring
from server.login import LoginService
from server.refresh import RefreshService
from server.sessions import LiveSession, SessionStore
from server.settings import Settings
from server.signing_keys import ServerKeys
from server.storage.database import Database
from server.storage.health import DatabaseHealth


@dataclass
class Services:
    settings: Settings
    db: Database
    keyring: Keyring
    keys: ServerKeys
    clock: Clock
    random_bytes: RandomBytes
    events: EventSink
    dpop: DPoPGuard
    login: LoginService
    refresh: RefreshService
    sessions: SessionStore
    resource_guard: ResourceGuard[LiveSession]
    # Readiness probes and the scrape's gauges read the database through it.
    database_health: DatabaseHealth


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc
