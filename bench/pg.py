"""PostgreSQL databases for the benchmarks: one fresh database per server run."""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

import psycopg

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def admin_url() -> str:
    return os.environ.get("BENCH_POSTGRES_URL", DEFAULT_ADMIN_URL)


def available() -> str | None:
    """None when PostgreSQL answers at admin_url(), else why not."""
    try:
        with psycopg.connect(admin_url(), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"no PostgreSQL at {admin_url()} ({str(exc).strip().splitlines()[0]})"
    return None


def fresh_database(name: str) -> str:
    """Drop and create database `name`; returns its URL."""
    with psycopg.connect(admin_url(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]
        conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    parts = urlsplit(admin_url())
    return urlunsplit(parts._replace(path="/" + name))


def drop_database(name: str) -> None:
    with psycopg.connect(admin_url(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]
