"""The application factory. The route table below is the server's map: every endpoint, and the
guard each one uses, is listed here."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import Mount, Route, Router

from protocol.errors import SplitlinkError
from server.audit import AuditRows, AuditTrail
from server.clock import Clock, RandomBytes, SystemClock, system_random_bytes
from server.cors import ListedOriginsCORS
from server.dpop.guard import ResourceGuard
from server.dpop.middleware import DPoPAuthMiddleware
from server.dpop.proof import DPoPGuard
from server.error_handlers import http_error, splitlink_error, unexpected_error
from server.events import EventSink, fan_out, log_event
from server.housekeeping import run_housekeeping
from server.login import LoginService
from server.mail.compose import MailComposer
from server.mail.mail_templates import MailTemplates
from server.mail.outbox import OutboxDispatcher
from server.mail.smtp import SmtpTransport
from server.mail.transport import DevMailbox, MailTransport
from server.metrics import DatabaseMetrics, counting, worker_started, worker_stopped
from server.middleware import SecurityHeadersMiddleware
from server.production import refuse_unsafe_production
from server.ratelimit import RateLimiter
from server.refresh import RefreshService
from server.request_log import RequestLogMiddleware
from server.request_metrics import RequestMetricsMiddleware
from server.routes import account, discovery, health, login, metrics, token, wellknown
from server.services import Services
from server.sessions import SessionService
from server.settings import Settings, settings_from_environment
from server.signing_keys import ServerKeys, open_keyring
from server.storage.audit import AuditStore
from server.storage.database import database_for
from server.storage.health import DatabaseHealth
from server.storage.housekeeping import HousekeepingStore
from server.storage.logins import DatabaseLoginStore
from server.storage.migrate import require_current_schema
from server.storage.outbox import DatabaseOutboxStore
from server.storage.ratelimit import DatabaseRateLimitStore
from server.storage.refresh import DatabaseRefreshStore
from server.storage.replay import DatabaseReplayStore
from server.storage.sessions import DatabaseSessionStore
from server.storage.signing_keys import SigningKeyStore

logger = logging.getLogger("splitlink")


async def build_services(
    settings: Settings,
    *,
    clock: Clock,
    random_bytes: RandomBytes,
    events: EventSink,
) -> Services:
    db_metrics = DatabaseMetrics()
    db = database_for(settings, observer=db_metrics)
    await db.connect()
    try:
        await require_current_schema(db)
        key_rows = SigningKeyStore(db)
        keyring = await open_keyring(key_rows, settings, random_bytes=random_bytes)
        keys = await ServerKeys.load(key_rows, keyring, clock=clock)
    except BaseException:
        await db.disconnect()
        raise
    replay = DatabaseReplayStore(db, retention=settings.dpop_max_age + settings.dpop_max_future + 1)
    dpop = DPoPGuard(
        public_url=settings.public_url,
        max_age=settings.dpop_max_age,
        max_future=settings.dpop_max_future,
        replay=replay,
        clock=clock,
        nonce_key=keyring.nonce_key if settings.use_dpop_nonce else None,
        nonce_step=settings.dpop_nonce_step,
        key_cache_size=settings.device_key_cache_size,
    )
    rate_limiter = RateLimiter(
        DatabaseRateLimitStore(db), hmac_key=keyring.hmac_key, window=settings.rate_limit_window
    )
    login_service = LoginService(
        settings=settings,
        store=DatabaseLoginStore(db, replay=replay),
        keyring=keyring,
        keys=keys,
        rate_limiter=rate_limiter,
        clock=clock,
        random_bytes=random_bytes,
        events=events,
    )
    sessions = SessionService(
        DatabaseSessionStore(db, replay=replay, idle_timeout=settings.session_idle_timeout)
    )
    return Services(
        settings=settings,
        db=db,
        keyring=keyring,
        keys=keys,
        clock=clock,
        random_bytes=random_bytes,
        events=events,
        dpop=dpop,
        login=login_service,
        refresh=RefreshService(
            settings=settings,
            store=DatabaseRefreshStore(db, replay=replay),
            keyring=keyring,
            keys=keys,
            clock=clock,
            random_bytes=random_bytes,
            events=events,
            idle_timeout=settings.session_idle_timeout,
        ),
        sessions=sessions,
        resource_guard=ResourceGuard(
            issuer=settings.issuer,
            audience=settings.token_audience,
            keys=keys,
            dpop=dpop,
            clock=clock,
            # The server's own endpoints see a revocation at once: every request checks the
            # session (SPEC.md §6.6), and records its proof in the same round trip.
            sessions=sessions,
            token_cache_size=settings.verified_token_cache_size,
        ),
        database_health=DatabaseHealth(db),
    )


def build_mail_composer(settings: Settings) -> MailComposer:
    """The templates are read and checked here: a broken one stops the server (docs/design.md
    §13.1)."""
    return MailComposer(
        app_name=settings.app_name,
        sender=settings.mail_from,
        templates=MailTemplates.load(settings.mail_templates_dir),
    )


def build_mail_transport(settings: Settings) -> MailTransport:
    """SMTP when `smtp_url` is set, else the development mailbox (docs/design.md §13)."""
    target = settings.smtp
    if target is None:
        logger.info("mail: development mailbox in %s", Path(settings.data_dir) / "mail")
        return DevMailbox(Path(settings.data_dir) / "mail", console=settings.dev_mailbox_console)
    logger.info("mail: SMTP %s", target.describe())
    return SmtpTransport(
        target,
        sender=settings.mail_envelope_sender,
        timeout=settings.smtp_timeout,
        ca_file=settings.smtp_tls_ca_file,
        local_hostname=urlsplit(settings.public_url).hostname or "localhost",
    )


def create_app(
    settings: Settings | None = None,
    *,
    clock: Clock | None = None,
    random_bytes: RandomBytes | None = None,
    events: EventSink | None = None,
    mail_transport: MailTransport | None = None,
    background_tasks: bool = True,
    freeze_after_startup: bool = False,
) -> Starlette:
    settings = settings or Settings()
    clock = clock or SystemClock()
    random_bytes = random_bytes or system_random_bytes
    # Every event is logged (or handed to the given sink), counted, and kept in the audit trail.
    audit = AuditTrail()
    events = counting(fan_out(events or log_event, audit.record))
    transport = mail_transport or build_mail_transport(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Before the database is opened, so that a broken template leaves nothing to close.
        composer = build_mail_composer(settings)
        svc = await build_services(settings, clock=clock, random_bytes=random_bytes, events=events)
        app.state.services = svc
        app.state.background_tasks = background_tasks
        app.state.audit = audit
        app.state.outbox = OutboxDispatcher(
            store=DatabaseOutboxStore(
                svc.db, max_failed_completions=settings.max_failed_completions
            ),
            keyring=svc.keyring,
            transport=transport,
            composer=composer,
            clock=clock,
            events=svc.events,
            poll_interval=settings.outbox_poll_interval,
            concurrency=settings.outbox_concurrency,
        )
        worker_started()
        tasks = []
        if background_tasks:
            tasks = [
                asyncio.create_task(app.state.outbox.run_forever()),
                asyncio.create_task(
                    run_housekeeping(
                        HousekeepingStore(svc.db),
                        clock=clock,
                        interval=settings.housekeeping_interval,
                        audit_retention_days=settings.audit_retention_days,
                    )
                ),
                asyncio.create_task(audit.run_forever(AuditStore(svc.db))),
                asyncio.create_task(_reload_keys(svc.keys, settings.key_refresh_interval)),
            ]
        if freeze_after_startup:
            _freeze_startup_objects()
        try:
            yield
        finally:
            if tasks:
                await _stop_dispatcher(app.state.outbox, tasks[0], settings.shutdown_timeout)
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if background_tasks:
                # The writer's last round: what the task above had not written yet.
                await _flush_audit(audit, AuditStore(svc.db))
            worker_stopped()
            await svc.db.disconnect()

    routes = [
        # Behind DPoPAuthMiddleware: a DPoP-bound access token, a proof, a live session. First,
        # because routes are matched in order and these carry most of the traffic.
        Route("/v1/me", account.me, methods=["GET"]),
        Route("/v1/sessions", account.list_sessions, methods=["GET"]),
        Route("/v1/sessions/{session_id}", account.end_session, methods=["DELETE"]),
        Route("/v1/logout", account.logout, methods=["POST"]),
        Route("/v1/logout/all", account.logout_all, methods=["POST"]),
        # Public: discovery, the login start and the token endpoints (each checks DPoP itself).
        Route("/.well-known/oauth-authorization-server", discovery.authorization_server_metadata),
        Route(discovery.JWKS_PATH, discovery.jwks),
        Route(discovery.OPENAPI_PATH, discovery.openapi_document, methods=["GET"]),
        Route(discovery.LOGIN_START_PATH, login.start_login, methods=["POST"]),
        Route(discovery.TOKEN_PATH, token.token, methods=["POST"]),
        Route(discovery.REVOCATION_PATH, token.revoke, methods=["POST"]),
        Route(discovery.INTROSPECTION_PATH, token.introspect, methods=["POST"]),
        # For load balancers and monitoring: no credentials, nothing about the configuration.
        Route(health.HEALTH_PATH, health.healthz, methods=["GET"]),
        Route(health.READY_PATH, health.readyz, methods=["GET"]),
        Route("/l", login.landing_page, methods=["GET", "HEAD", "OPTIONS"]),
        # App association files: the OS opens /l links in the app (404 when not configured).
        Route(wellknown.APPLE_PATH, wellknown.apple, methods=["GET"]),
        Route(wellknown.ANDROID_PATH, wellknown.android, methods=["GET"]),
        # Operators only: the networks of metrics_allowed_networks (README "Metrics").
        Route(metrics.METRICS_PATH, metrics.scrape, methods=["GET"]),
    ]
    # CORS sits outside the /v1/ authentication, which would refuse a preflight (it carries no
    # credentials), and inside the security headers, which its answers get too.
    cors = (
        [Middleware(ListedOriginsCORS, origins=settings.cors_origins)]
        if settings.cors_origins
        else []
    )
    app = Starlette(
        routes=routes,
        middleware=[
            # Outermost, so that it counts every answer with its final status.
            Middleware(RequestMetricsMiddleware),
            # Inside the metrics: its request line sees the final status too.
            Middleware(RequestLogMiddleware, trusted_proxies=settings.trusted_proxies),
            Middleware(SecurityHeadersMiddleware),
            *cors,
            Middleware(
                DPoPAuthMiddleware,
                guard=lambda scope: scope["app"].state.services.resource_guard,
                protect=_is_account_path,
            ),
        ],
        exception_handlers={
            SplitlinkError: splitlink_error,
            HTTPException: http_error,
            Exception: unexpected_error,
        },
        lifespan=lifespan,
    )
    _refuse_slash_redirects(app.router)
    return app


def _refuse_slash_redirects(router: Router) -> None:
    """Starlette answers a path that matches only with its trailing slash added or removed by
    a redirect to a URL built from the `Host` header; a client that follows it posts its grant
    to that host. Such a path answers 404 instead (SPEC.md §3.6), on every router."""
    router.redirect_slashes = False
    for route in router.routes:
        if isinstance(route, Mount):
            mounted = route.app.router if isinstance(route.app, Starlette) else route.app
            if isinstance(mounted, Router):
                _refuse_slash_redirects(mounted)


def _is_account_path(path: str) -> bool:
    return path.startswith("/v1/") and path != discovery.LOGIN_START_PATH


async def _stop_dispatcher(
    outbox: OutboxDispatcher, task: asyncio.Task[None], timeout: float
) -> None:
    """Let the hand-offs under way finish and be recorded, up to `timeout`; past it they are
    cut short and their rows released (OutboxDispatcher._release). Rows not yet claimed stay
    for the next process, so a message is neither lost nor sent twice by a shutdown."""
    outbox.stop()
    try:
        async with asyncio.timeout(timeout):
            await asyncio.shield(task)
    except TimeoutError:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _flush_audit(audit: AuditTrail, rows: AuditRows) -> None:
    """The rows still queued at shutdown; a failure here is logged, never raised."""
    try:
        await audit.flush(rows)
    except Exception:
        logger.exception("audit: %d rows could not be written at shutdown", audit.pending)


async def _reload_keys(keys: ServerKeys, interval: float) -> None:
    """Pick up keys rotated by `splitlink keys rotate` or on another host."""
    while True:
        await asyncio.sleep(interval)
        try:
            await keys.reload(force=True)
        except Exception:
            logger.exception("signing keys: reload failed; will retry")


def create_app_from_environment() -> Starlette:
    """Factory for `uvicorn --factory` and for each worker of `splitlink serve`."""
    settings = settings_from_environment(os.environ)
    refuse_unsafe_production(settings)
    return create_app(settings, freeze_after_startup=True)


def _freeze_startup_objects() -> None:
    """Keep what exists once the worker has started (modules, settings, templates, tables,
    caches' containers) out of Python's cyclic garbage collector, which otherwise walks all of
    it at every full collection while the event loop waits: a pause that every request in
    flight would share. Garbage is collected
    first, so that none is kept for good; the process's own server only, since a process that
    builds many apps (the tests) would keep each one's objects."""
    gc.collect()
    gc.freeze()
