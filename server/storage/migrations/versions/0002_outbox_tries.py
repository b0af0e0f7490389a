"""Every delivery try of an outbox row: when, what came of it, and the error (docs/design.md §12.2).

`try_number` is the row's `tries` value after the claim that made the try, so a lease that runs
out and a second claim give two distinct tries. There is no foreign key: housekeeping deletes
finished outbox rows, and the dispatcher removes their tries afterwards.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"

STATEMENTS = [
    """CREATE TABLE outbox_tries (
        outbox_id TEXT NOT NULL,
        try_number INTEGER NOT NULL,
        tried_at BIGINT NOT NULL,
        outcome TEXT NOT NULL,
        detail TEXT,
        PRIMARY KEY (outbox_id, try_number)
    )""",
]


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)
