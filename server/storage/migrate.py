"""Apply and check schema versions."""

from __future__ import annotations

from server.storage.database import Database
from server.storage.schema import LATEST_VERSION, MIGRATIONS


class SchemaBehind(RuntimeError):
    pass


async def schema_version(db: Database) -> int:
    async with db.autocommit() as conn:
        try:
            row = await conn.fetch_one("SELECT MAX(version) AS version FROM schema_version")
        except Exception:  # no schema_version table yet: an empty database
            return 0
    return int(row["version"]) if row and row["version"] is not None else 0


async def migrate(db: Database) -> list[int]:
    """Bring the schema to the latest version; returns the versions applied."""
    async with db.autocommit() as conn:
        if db.dialect == "sqlite":
            # WAL lets readers proceed during a write; it is a property of the file and persists.
            await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    applied = []
    for version, statements in MIGRATIONS:
        async with db.transaction() as conn:
            row = await conn.fetch_one("SELECT MAX(version) AS version FROM schema_version")
            current = row["version"] if row and row["version"] is not None else 0
            if version <= current:
                continue
            for statement in statements:
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO schema_version (version) VALUES (:version)", {"version": version}
            )
            applied.append(version)
    return applied


async def require_current_schema(db: Database) -> None:
    version = await schema_version(db)
    if version < LATEST_VERSION:
        raise SchemaBehind(
            f"the database schema is at version {version} and this server needs "
            f"{LATEST_VERSION}: run `splitlink migrate` first"
        )
    if version > LATEST_VERSION:
        raise SchemaBehind(
            f"the database schema is at version {version}, newer than this server "
            f"({LATEST_VERSION}): upgrade the server"
        )
