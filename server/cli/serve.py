"""`splitlink serve`: the HTTP server, in one or more worker processes."""

from __future__ import annotations

import asyncio
import logging
import logging.config
import os
import socket
import sys
from urllib.parse import urlsplit

import click
import uvicorn

from server.cli.common import DATABASE_URL, command_settings, nothing, with_database
from server.logs import LOG_LEVELS, serve_log_config
from server.metrics_directory import MULTIPROCESS_DIR_VARIABLE, metrics_directory
from server.production import ProductionRefused, production_warnings, refuse_unsafe_production
from server.settings import LogLevel, Settings

logger = logging.getLogger("splitlink.serve")


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
@DATABASE_URL
@click.option(
    "--log-level",
    default=None,
    type=click.Choice(LOG_LEVELS),
    help="Overrides SPLITLINK_LOG_LEVEL (default info).",
)
def serve(
    host: str, port: int, workers: int, database_url: str | None, log_level: LogLevel | None
) -> None:
    """Run the HTTP server. Its log, security events included, goes to stderr."""
    settings = command_settings(database_url)
    level = log_level or settings.log_level
    log_config = serve_log_config(level, settings.effective_log_format)
    # The same log as the workers', for what is said before they start.
    logging.config.dictConfig(log_config)
    if settings.production:
        try:
            refuse_unsafe_production(settings)
        except ProductionRefused as exc:
            raise click.ClickException(str(exc)) from None
        for warning in production_warnings(settings):
            logger.warning("%s", warning)
    _refuse_a_taken_port(host, port)
    # Before the workers start: the schema and the secret are checked once, and a development
    # secret is created once, so that they all share it.
    asyncio.run(with_database(settings, nothing))
    _announce(settings, host=host, port=port, workers=workers)
    sys.stdout.flush()
    with metrics_directory(settings.data_dir) as metrics_dir:
        # Set before prometheus-client is imported, which happens when uvicorn loads the app in
        # each worker: every worker then counts into this directory, and a scrape sums them
        # (server/metrics.py).
        os.environ[MULTIPROCESS_DIR_VARIABLE] = str(metrics_dir)
        uvicorn.run(
            "server.app:create_app_from_environment",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_config=log_config,
            log_level=level,
            access_log=False,
            timeout_keep_alive=settings.http_keep_alive_timeout,
            limit_concurrency=settings.http_concurrency_limit,
            timeout_graceful_shutdown=settings.shutdown_timeout,
            proxy_headers=False,
            server_header=False,
        )


def _refuse_a_taken_port(host: str, port: int) -> None:
    """Say which port is taken and how to choose another, instead of uvicorn's traceback."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As uvicorn binds: a port whose last connections wait out TIME_WAIT is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise click.ClickException(
                f"cannot listen on {host} port {port}: {exc.strerror or exc}. Choose another "
                "port (--port 8500, or `make run PORT=8500`) and set SPLITLINK_PUBLIC_URL to "
                "match (make run does)"
            ) from exc


def _announce(settings: Settings, *, host: str, port: int, workers: int) -> None:
    """Where this server listens, where clients are told to go, and whether those can meet."""
    shown = f"[{host}]" if ":" in host else host
    listening = f"http://{shown}:{port}"
    logger.info(
        "listening on %s (%d worker%s); the public URL is %s",
        listening,
        workers,
        "" if workers == 1 else "s",
        settings.public_url,
    )
    public = urlsplit(settings.public_url)
    # An https public URL always has a TLS proxy in front (serve speaks plain HTTP), whose port
    # is its own; a plain http one on another port is almost always a slip.
    public_port = public.port or 80
    if public.scheme == "http" and public_port != port:
        logger.warning(
            "listening on port %d, but SPLITLINK_PUBLIC_URL is %s (port %d): clients, emailed "
            "links and DPoP proofs use the public URL; set SPLITLINK_PUBLIC_URL=http://%s:%d "
            "unless a proxy forwards port %d here",
            port,
            settings.public_url,
            public_port,
            public.hostname,
            port,
            public_port,
        )
