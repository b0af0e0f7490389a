"""Housekeeping finds what it deletes through indexes that hold only deletable rows.

The purge of expired attempts asked for unconsumed attempts by expiry, through an index of every
attempt's expiry. Consumed attempts are kept (their session refers to them) and have all expired,
so every purge walked one index entry and one row per login ever completed, holding SQLite's
write lock throughout: with a million users, 2.6 to 2.7 s per purge (a seeded SQLite file, 2
cores), every minute in every worker, during which no login could start. The index now holds
unconsumed attempts only, so a purge visits those that expired, plus the few still live: 0.1 ms
on the same file. Building it there took 2.2 s.

Likewise the finished outbox rows are found by their creation time in an index of finished
rows, where the purge read the whole table, and their tries are deleted by the rows being purged
instead of by a search of the whole tries table (docs/design.md §6).
The tries of rows deleted before this revision are deleted here, once.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    op.execute(
        "CREATE INDEX login_attempts_unconsumed_expiry ON login_attempts (expires_at) "
        "WHERE consumed_at IS NULL"
    )
    op.execute("DROP INDEX login_attempts_expires_at")
    op.execute(
        "CREATE INDEX outbox_finished_created_at ON outbox (created_at) WHERE status <> 'queued'"
    )
    op.execute(
        "DELETE FROM outbox_tries WHERE NOT EXISTS "
        "(SELECT 1 FROM outbox WHERE outbox.id = outbox_tries.outbox_id)"
    )
