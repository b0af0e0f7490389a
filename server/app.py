"""The application factory. The route table below is the server's map: every endpoint, and the
guard each one uses, is listed here."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from protocol.errors import ErrorCode, SplitlinkError
from server.clock import Clock, RandomBytes, SystemClock, system_random_bytes
from server.dpop_guard import DPoPGuard
from server.errors import error_response_parts
from server.events import EventSink, log_event
from server.housekeeping import run_housekeeping
from server.keyring import Keyring, load_root_secret
from server.login import LoginService
from server.mail.outbox import OutboxDispatcher
from server.mail.transport import DevMailbox, MailTransport
from server.middleware import SecurityHeadersMiddleware
from server.ratelimit import RateLimiter
from server.replay import ReplayStore
from server.resource import ResourceGuard
from server.routes import discovery, login, me, token
from server.services import Services
from server.sessions import SessionStore
from server.settings import Settings
from server.signing_keys import load_key_set
from server.storage.database import Database
from server.storage.migrate import require_current_schema

logger = logging.getLogger("splitlink")


async def _splitlink_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, SplitlinkError):  # pragma: no cover - registered for this type only
        raise exc
    status, body, headers = error_response_parts(exc)
    return JSONResponse(body, status_code=status, headers=headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    code = {404: ErrorCode.NOT_FOUND, 405: ErrorCode.METHOD_NOT_ALLOWED}.get(
        status, ErrorCode.INVALID_REQUEST
    )
    return JSONResponse(
        {"error": code.value, "error_description": "no such endpoint or method"},
        status_code=status,
    )


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    logger.error("unexpected %s on %s %s", type(exc).__name__, request.method, request.url.path)
    return JSONResponse(
        {"error": ErrorCode.SERVER_ERROR.value, "error_description": "internal error"},
        status_code=500,
    )


async def build_services(
    settings: Settings,
    *,
    clock: Clock,
    random_bytes: RandomBytes,
    events: EventSink,
) -> Services:
    keyring = Keyring.from_root(load_root_secret(settings, random_bytes=random_bytes))
    db = Database(settings.database_url, sqlite_busy_timeout=settings.sqlite_busy_timeout)
    await db.connect()
    await require_current_schema(db)
    keys = await load_key_set(db, keyring)
    replay = ReplayStore(db, retention=settings.dpop_max_age + settings.dpop_max_future + 1)
    dpop = DPoPGuard(settings=settings, replay=replay, clock=clock)
    rate_limiter = RateLimiter(db, hmac_key=keyring.hmac_key, window=settings.rate_limit_window)
    login_service = LoginService(
        settings=settings,
        db=db,
        keyring=keyring,
        keys=keys,
        rate_limiter=rate_limiter,
        clock=clock,
        random_bytes=random_bytes,
        events=events,
    )
    sessions = SessionStore(db, idle_timeout=settings.session_idle_timeout)
    svc = Services(
        settings=settings,
        db=db,
        keyring=keyring,
        keys=keys,
        clock=clock,
        random_bytes=random_bytes,
        events=events,
        dpop=dpop,
        login=login_service,
        sessions=sessions,
        resource_guard=ResourceGuard(
            issuer=settings.issuer,
            audience=settings.token_audience,
            keys=lambda: svc.keys,
            dpop=dpop,
            clock=clock,
            session_lookup=sessions.live_session,
        ),
    )
    return svc


def create_app(
    settings: Settings | None = None,
    *,
    clock: Clock | None = None,
    random_bytes: RandomBytes | None = None,
    events: EventSink | None = None,
    mail_transport: MailTransport | None = None,
    background_tasks: bool = True,
) -> Starlette:
    settings = settings or Settings()
    clock = clock or SystemClock()
    random_bytes = random_bytes or system_random_bytes
    events = events or log_event
    transport = mail_transport or DevMailbox(
        Path(settings.data_dir) / "mail", console=settings.dev_mailbox_console
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        svc = await build_services(settings, clock=clock, random_bytes=random_bytes, events=events)
        app.state.services = svc
        app.state.outbox = OutboxDispatcher(
            svc.db,
            svc.keyring,
            transport,
            clock=clock,
            poll_interval=settings.outbox_poll_interval,
            max_failed_completions=settings.max_failed_completions,
        )
        tasks = []
        if background_tasks:
            tasks = [
                asyncio.create_task(app.state.outbox.run_forever()),
                asyncio.create_task(
                    run_housekeeping(svc.db, clock=clock, interval=settings.housekeeping_interval)
                ),
            ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await svc.db.disconnect()

    routes = [
        Route("/.well-known/oauth-authorization-server", discovery.authorization_server_metadata),
        Route(discovery.JWKS_PATH, discovery.jwks),
        Route(discovery.LOGIN_START_PATH, login.start_login, methods=["POST"]),
        Route(discovery.TOKEN_PATH, token.token, methods=["POST"]),
        Route("/l", login.landing_page, methods=["GET", "HEAD", "OPTIONS"]),
        Route("/v1/me", me.me, methods=["GET"]),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(SecurityHeadersMiddleware)],
        exception_handlers={
            SplitlinkError: _splitlink_error,
            HTTPException: _http_error,
            Exception: _unexpected_error,
        },
        lifespan=lifespan,
    )


def create_app_from_environment() -> Starlette:
    """Factory for `uvicorn --factory` and for each worker of `splitlink serve`."""
    return create_app(Settings())
