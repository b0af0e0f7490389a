"""Health of a server process, for load balancers and monitoring (SPEC.md §1.4, README
"Operating splitlink").

Liveness is the process answering at all. Readiness is whether it can do its work: the database
answers within a short timeout, its schema is the one this server needs, the signing keys were
read recently, and the outbox is not stuck. Every check only reads, with one cheap indexed query
each, because probes come every few seconds from every balancer. A result names the checks that
failed and nothing else: no URL, version, path or error text, since the endpoints answer anyone.
"""

from __future__ import annotations

import asyncio
import functools
import time
from dataclasses import dataclass
from pathlib import Path

from server.services import Services
from server.storage.migrate import head_revision

DATABASE_CHECK_TIMEOUT = 2.0
# The keys are reloaded every key_refresh_interval: three missed reloads in a row mean this
# process may sign with a key that was retired meanwhile.
MISSED_KEY_RELOADS = 3

_OLDEST_DUE = (
    "SELECT 1 AS stuck FROM outbox WHERE status = 'queued' AND not_before < :cutoff LIMIT 1"
)


@dataclass(frozen=True)
class Readiness:
    failed: tuple[str, ...]

    @property
    def ready(self) -> bool:
        return not self.failed


@functools.cache
def _head() -> str:
    return head_revision()


async def check_readiness(svc: Services, *, background_tasks: bool = True) -> Readiness:
    """The names of the checks that fail, in a fixed order: `database` (then the checks that
    need it are not run), `schema`, `signing_key`, `outbox`. `background_tasks` False: this
    process reloads no keys, so their age says nothing."""
    failed: list[str] = []
    settings = svc.settings
    if background_tasks and (
        time.monotonic() - svc.keys.loaded_at > MISSED_KEY_RELOADS * settings.key_refresh_interval
    ):
        failed.append("signing_key")
    try:
        async with asyncio.timeout(DATABASE_CHECK_TIMEOUT):
            revision = await _schema_revision(svc)
            stuck = await svc.db.statement(
                _OLDEST_DUE, {"cutoff": svc.clock.now() - settings.outbox_stuck_after}
            )
    except Exception:
        return Readiness(failed=("database", *failed))
    if revision != _head():
        failed.insert(0, "schema")
    if stuck:
        failed.append("outbox")
    return Readiness(failed=tuple(failed))


async def _schema_revision(svc: Services) -> str | None:
    db = svc.db
    # A SQLite file removed under a running server still answers through the connections
    # that hold it open, while every write lands in a file that no longer exists.
    if db.dialect == "sqlite" and not Path(db.sqlite_path).is_file():
        raise FileNotFoundError("the database file is gone")
    rows = await db.statement("SELECT version_num FROM alembic_version")
    return str(rows[0]["version_num"]) if rows else None
