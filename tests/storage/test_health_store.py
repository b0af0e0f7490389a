"""The database's own health on both backends, as readiness probes, the scrape's gauges and
`splitlink doctor` read it: schema revision, waiting mail, reachability and clock."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from support.backends import execute

from server.storage.database import Database
from server.storage.health import DatabaseHealth, QueuedMail, missing_sqlite_file
from server.storage.migrate import head_revision

pytestmark = pytest.mark.anyio


def _mail(url: str, outbox_id: str, *, status: str, not_before: int, created_at: int) -> None:
    execute(
        url,
        "INSERT INTO outbox (id, kind, recipient, message_id, status, tries, not_before, "
        "created_at) VALUES (?, 'login', 'a@example.com', 'm', ?, 0, ?, ?)",
        outbox_id,
        status,
        not_before,
        created_at,
    )


async def test_the_schema_revision_is_the_one_recorded(
    database: Database, database_url: str
) -> None:
    health = DatabaseHealth(database)
    assert await health.schema_revision() == head_revision()
    execute(database_url, "UPDATE alembic_version SET version_num = '0001'")
    assert await health.schema_revision() == "0001"


async def test_mail_due_since_before_the_cutoff_is_told(
    database: Database, database_url: str
) -> None:
    health = DatabaseHealth(database)
    _mail(database_url, "sent", status="sent", not_before=1, created_at=1)
    assert await health.mail_due_since(cutoff=100) is False
    _mail(database_url, "due", status="queued", not_before=50, created_at=1)
    assert await health.mail_due_since(cutoff=50) is False
    assert await health.mail_due_since(cutoff=51) is True


async def test_queued_mail_is_counted_with_the_time_of_the_oldest(
    database: Database, database_url: str
) -> None:
    health = DatabaseHealth(database)
    assert await health.queued_mail() == QueuedMail(count=0, oldest_created_at=None)
    _mail(database_url, "a", status="queued", not_before=0, created_at=7)
    _mail(database_url, "b", status="queued", not_before=0, created_at=3)
    _mail(database_url, "c", status="sent", not_before=0, created_at=1)
    assert await health.queued_mail() == QueuedMail(count=2, oldest_created_at=3)


async def test_a_connected_database_is_reachable_and_names_its_backend(
    database: Database, backend: str
) -> None:
    health = DatabaseHealth(database)
    await health.reachable()
    assert health.backend == backend


async def test_the_database_clock_is_seconds_since_the_epoch(database: Database) -> None:
    before = time.time()
    database_now = await DatabaseHealth(database).clock()
    after = time.time()
    # The database runs on this host in the tests: its clock is this host's.
    assert before - 2 <= database_now <= after + 2


async def test_a_missing_sqlite_file_is_named_and_an_existing_one_or_postgresql_is_not(
    tmp_path: Path,
) -> None:
    absent = tmp_path / "absent.db"
    present = tmp_path / "present.db"
    present.touch()
    assert missing_sqlite_file(f"sqlite:///{absent}") == str(absent)
    assert missing_sqlite_file(f"sqlite:///{present}") is None
    assert missing_sqlite_file("postgresql://postgres@127.0.0.1/none") is None


@pytest.mark.parametrize("backend", ["sqlite"])  # a file only SQLite has
async def test_a_sqlite_file_removed_under_a_connected_database_fails_the_schema_read(
    database: Database,
) -> None:
    Path(database.sqlite_path).unlink()
    with pytest.raises(FileNotFoundError):
        await DatabaseHealth(database).schema_revision()
