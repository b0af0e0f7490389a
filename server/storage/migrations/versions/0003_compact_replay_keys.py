"""DPoP replay entries keyed by 16 bytes instead of 64 hexadecimal characters, and on SQLite
stored in the primary-key B-tree itself (WITHOUT ROWID): one insert per protected request
touches two B-trees instead of three, with keys a quarter the size (docs/design.md §7). The first
128 bits of SHA-256 keep collisions out of reach: at a billion live entries the chance of any
is below 10^-20.

Entries live for two minutes, but they are copied rather than dropped, so that a proof used just
before the upgrade cannot be used again just after it.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"

REPLAY_KEY_BYTES = 16


def upgrade() -> None:
    conn = op.get_bind()
    sqlite = conn.dialect.name == "sqlite"
    key_type = "BLOB" if sqlite else "BYTEA"
    without_rowid = " WITHOUT ROWID" if sqlite else ""
    op.execute(
        f"CREATE TABLE dpop_replay_compact (replay_key {key_type} PRIMARY KEY, "
        f"expires_at BIGINT NOT NULL){without_rowid}"
    )
    rows = conn.execute(sa.text("SELECT replay_key, expires_at FROM dpop_replay")).fetchall()
    entries = []
    for replay_key, expires_at in rows:
        try:
            entries.append(
                {"key": bytes.fromhex(replay_key)[:REPLAY_KEY_BYTES], "expires_at": expires_at}
            )
        except ValueError:
            continue  # not written by this server
    if entries:
        conn.execute(
            sa.text(
                "INSERT INTO dpop_replay_compact (replay_key, expires_at) "
                "VALUES (:key, :expires_at) ON CONFLICT (replay_key) DO NOTHING"
            ),
            entries,
        )
    op.execute("DROP TABLE dpop_replay")
    op.execute("ALTER TABLE dpop_replay_compact RENAME TO dpop_replay")
    op.execute("CREATE INDEX dpop_replay_expires_at ON dpop_replay (expires_at)")
