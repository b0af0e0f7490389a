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
from typing import TYPE_CHECKING, Protocol

from server.storage.migrate import head_revision

if TYPE_CHECKING:
    from server.services import Services

DATABASE_CHECK_TIMEOUT = 2.0
# The keys are reloaded every key_refresh_interval: three missed reloads in a row mean this
# process may sign with a key that was retired meanwhile.
MISSED_KEY_RELOADS = 3


class ReadinessProbes(Protocol):
    """The reads a probe makes of the database; each raises when the database cannot answer."""

    async def schema_revision(self) -> str | None: ...

    async def mail_due_since(self, *, cutoff: int) -> bool: ...


@dataclass(frozen=True, slots=True)
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
    probes: ReadinessProbes = svc.database_health
    if background_tasks and (
        time.monotonic() - svc.keys.loaded_at > MISSED_KEY_RELOADS * settings.key_refresh_interval
    ):
        failed.append("signing_key")
    try:
        async with asyncio.timeout(DATABASE_CHECK_TIMEOUT):
            revision = await probes.schema_revision()
            stuck = await probes.mail_due_since(
                cutoff=svc.clock.now() - settings.outbox_stuck_after
            )
    except Exception:
        return Readiness(failed=("database", *failed))
    if revision != _head():
        failed.insert(0, "schema")
    if stuck:
        failed.append("outbox")
    return Readiness(failed=tuple(failed))
