"""Versioned schema migrations with Alembic (docs/design.md §4).

`splitlink migrate` upgrades to the newest revision; the server refuses to start on a database
whose revision is not the newest this code knows.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from server.storage.database import Database

MIGRATIONS = Path(__file__).parent / "migrations"


class SchemaBehind(RuntimeError):
    pass


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships revisions
        raise RuntimeError("no migrations found")
    return head


def sqlalchemy_url(database_url: str) -> str:
    """The same database for SQLAlchemy's synchronous drivers (migrations only)."""
    for prefix in ("postgresql://", "postgres://"):
        if database_url.startswith(prefix):
            return "postgresql+psycopg://" + database_url.removeprefix(prefix)
    return database_url


def migrate(database_url: str, *, revision: str = "head") -> None:
    """Upgrade the schema to the newest revision (or to `revision`). Safe to run again; it does
    nothing then."""
    url = sqlalchemy_url(database_url)
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.begin() as connection:
            if engine.dialect.name == "sqlite":
                # WAL lets readers proceed during a write; it is a property of the file.
                connection.exec_driver_sql("PRAGMA journal_mode=WAL")
            config = _alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    finally:
        engine.dispose()


async def schema_revision(db: Database) -> str | None:
    async with db.autocommit() as conn:
        try:
            row = await conn.fetch_one("SELECT version_num FROM alembic_version")
        except Exception:  # no alembic_version table: an empty database
            return None
    return None if row is None else str(row["version_num"])


async def require_current_schema(db: Database) -> None:
    revision = await schema_revision(db)
    head = head_revision()
    if revision != head:
        raise SchemaBehind(
            f"the database schema is at revision {revision or 'none'} and this server needs "
            f"{head}: run `splitlink migrate` first (a newer revision needs a newer server)"
        )
