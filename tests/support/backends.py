"""The two storage backends under test: a SQLite file, and a fresh PostgreSQL database per test.

PostgreSQL runs when SPLITLINK_TEST_POSTGRES_URL names a server (CI sets it); elsewhere those
tests skip and say so. Each test gets its own database, cloned from a migrated template.
"""

from __future__ import annotations

import atexit
import os
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import pytest

if TYPE_CHECKING:
    import psycopg

POSTGRES_ENV = "SPLITLINK_TEST_POSTGRES_URL"
BACKENDS = ["sqlite", "postgresql"]
# One template per test process: concurrent runs on one server must not share it.
_TEMPLATE = f"splitlink_test_template_{os.getpid()}"
_template_ready = False


def postgres_url() -> str:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f"PostgreSQL tests need {POSTGRES_ENV}=postgresql://user@host:port/db")
    return url


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, ""))


def _connect(url: str, *, autocommit: bool = False) -> psycopg.Connection[Any]:
    # Imported here, as `migrate` below: the root conftest reads BACKENDS in every run, and a
    # run of the pure core alone should not load a database driver or the server.
    import psycopg

    return psycopg.connect(url, autocommit=autocommit)


def _admin(url: str) -> psycopg.Connection[Any]:
    return _connect(url, autocommit=True)


def _ensure_template(url: str) -> None:
    global _template_ready
    if _template_ready:
        return
    with _admin(url) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {_TEMPLATE} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {_TEMPLATE}")
    from server.storage.migrate import migrate

    migrate(_with_database(url, _TEMPLATE))
    _template_ready = True
    atexit.register(_drop_template, url)


def _drop_template(url: str) -> None:
    with _admin(url) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {_TEMPLATE} WITH (FORCE)")


@contextmanager
def postgres_database(*, migrated: bool = True) -> Iterator[str]:
    """A new database, migrated and empty (or without any table); dropped afterwards."""
    url = postgres_url()
    if migrated:
        _ensure_template(url)
    name = "splitlink_test_" + secrets.token_hex(6)
    with _admin(url) as conn:
        conn.execute(f"CREATE DATABASE {name}" + (f" TEMPLATE {_TEMPLATE}" if migrated else ""))
    try:
        yield _with_database(url, name)
    finally:
        with _admin(url) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextmanager
def empty_database_url_for(backend: str, tmp_path: Path) -> Iterator[str]:
    """A database without any table, for migration tests."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    with postgres_database(migrated=False) as url:
        yield url


@contextmanager
def database_url_for(backend: str, tmp_path: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'splitlink.db'}"
    else:
        with postgres_database() as url:
            yield url


def query(database_url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    if database_url.startswith("sqlite"):
        with sqlite3.connect(database_url.removeprefix("sqlite:///")) as conn:
            return conn.execute(sql, params).fetchall()
    with _connect(database_url) as conn:
        return [tuple(row) for row in conn.execute(sql.replace("?", "%s"), params).fetchall()]


def execute(database_url: str, sql: str, *params: Any) -> None:
    """One statement that returns no rows, committed (`query` is for the ones that do)."""
    if database_url.startswith("sqlite"):
        with sqlite3.connect(database_url.removeprefix("sqlite:///")) as conn:
            conn.execute(sql, params)
        return
    with _connect(database_url) as conn:
        conn.execute(sql.replace("?", "%s"), params)


def dump(database_url: str) -> str:
    """Every row of every table, as text: what a stolen backup would hold."""
    if database_url.startswith("sqlite"):
        with sqlite3.connect(database_url.removeprefix("sqlite:///")) as conn:
            return "\n".join(conn.iterdump())
    lines = []
    with _connect(database_url) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'public' ORDER BY table_name"
        ).fetchall()
        for (table,) in tables:
            rows = conn.execute(f'SELECT * FROM "{table}" ORDER BY 1').fetchall()  # noqa: S608
            lines.extend(f"{table}: {tuple(row)!r}" for row in rows)
    return "\n".join(lines)
