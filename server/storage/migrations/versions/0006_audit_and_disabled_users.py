"""The audit trail of security events, and users that an operator has disabled.

`audit_events` keeps one row per security event (SPEC.md §6.12) for `audit_retention_days`: its
identifiers and its non-secret details, never a secret. It has no foreign key, so that rows
outlive the user, session or attempt they name (`splitlink users delete` keeps them). Its id
orders the rows for `splitlink audit tail --follow`; `at` serves the purge and `--since`.

`users.disabled_at` is set by `splitlink users disable`: such a user can neither start nor
complete a login, and has no live session (SPEC.md §6.1, §6.2, §6.6).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    # An increasing id on each backend: SQLite's rowid alias, PostgreSQL's identity column.
    key = (
        "id INTEGER PRIMARY KEY"
        if op.get_bind().dialect.name == "sqlite"
        else "id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"
    )
    op.execute(
        f"""CREATE TABLE audit_events (
        {key},
        at BIGINT NOT NULL,
        event TEXT NOT NULL,
        user_id TEXT,
        jkt TEXT,
        client_address TEXT,
        request_id TEXT,
        details TEXT NOT NULL
    )"""
    )
    op.execute("CREATE INDEX audit_events_at ON audit_events (at)")
    op.execute("CREATE INDEX audit_events_user_id ON audit_events (user_id)")
    op.execute("ALTER TABLE users ADD COLUMN disabled_at BIGINT")
