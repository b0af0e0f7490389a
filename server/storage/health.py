"""What the database says about itself and the work waiting in it: for readiness probes
(server/health.py), the scrape's gauges (server/scrape_gauges.py) and `splitlink doctor`. Every
read is one cheap statement; none writes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import databases

from server.storage.database import Database

_SCHEMA_REVISION = "SELECT version_num FROM alembic_version"
_MAIL_DUE_SINCE = (
    "SELECT 1 AS stuck FROM outbox WHERE status = 'queued' AND not_before < :cutoff LIMIT 1"
)
# The count walks the outbox index's `status = 'queued'` range (revision 0004); the queued rows
# are the few in flight, so reading their `created_at` is cheap too.
_QUEUED_MAIL = (
    "SELECT COUNT(*) AS queued, MIN(created_at) AS oldest FROM outbox WHERE status = 'queued'"
)
_DATABASE_NOW = {
    "sqlite": "SELECT (julianday('now') - 2440587.5) * 86400.0 AS now",
    "postgresql": "SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8 AS now",
}


class DatabaseFileGone(FileNotFoundError):
    """The SQLite file a running server opened is no longer there."""


@dataclass(frozen=True, slots=True)
class QueuedMail:
    """The outbox's queued messages: how many, and when the oldest was queued."""

    count: int
    oldest_created_at: int | None


def missing_sqlite_file(database_url: str) -> str | None:
    """The path of the SQLite file `database_url` names, if that file does not exist: opening
    it would create an empty database. None for a file that exists, or for PostgreSQL."""
    if not database_url.startswith("sqlite"):
        return None
    path: str = databases.DatabaseURL(database_url).database
    return None if Path(path).is_file() else path


class DatabaseHealth:
    """`server.health.ReadinessProbes`, `server.scrape_gauges.QueuedMailSource` and
    `server.doctor.DatabaseProbes` on the database."""

    def __init__(self, db: Database) -> None:
        self._db = db

    @property
    def backend(self) -> str:
        return self._db.dialect

    async def schema_revision(self) -> str | None:
        """The revision the schema is at; raises when the database cannot say."""
        db = self._db
        # A SQLite file removed under a running server still answers through the connections
        # that hold it open, while every write lands in a file that no longer exists.
        if db.dialect == "sqlite" and not Path(db.sqlite_path).is_file():
            raise DatabaseFileGone("the database file is gone")
        rows = await db.statement(_SCHEMA_REVISION)
        return str(rows[0]["version_num"]) if rows else None

    async def mail_due_since(self, *, cutoff: int) -> bool:
        """Whether a queued message has been due since before `cutoff`."""
        return bool(await self._db.statement(_MAIL_DUE_SINCE, {"cutoff": cutoff}))

    async def queued_mail(self) -> QueuedMail:
        row = (await self._db.statement(_QUEUED_MAIL))[0]
        oldest = row["oldest"]
        return QueuedMail(
            count=int(row["queued"]), oldest_created_at=None if oldest is None else int(oldest)
        )

    async def reachable(self) -> None:
        """Raises unless the database answers a statement."""
        async with self._db.autocommit() as conn:
            await conn.fetch_one("SELECT 1")

    async def clock(self) -> float:
        """The database's time, in seconds since the epoch."""
        async with self._db.autocommit() as conn:
            row = await conn.fetch_one(_DATABASE_NOW[self._db.dialect])
        if row is None:  # pragma: no cover - a SELECT without FROM returns one row
            raise RuntimeError("the database did not tell its time")
        return float(row["now"])
