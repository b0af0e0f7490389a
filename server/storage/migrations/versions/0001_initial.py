"""The first schema: users, attempts, sessions, refresh tokens, replay entries, rate limits,
the outbox and signing keys.

Times are integer seconds since the epoch; hashes and sealed values are text, so one DDL serves
SQLite and PostgreSQL.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from alembic import op

revision = "0001"
down_revision = None

STATEMENTS = [
    """CREATE TABLE users (
        id TEXT PRIMARY KEY,
        email_canonical TEXT NOT NULL UNIQUE,
        email_address TEXT NOT NULL,
        created_at BIGINT NOT NULL
    )""",
    """CREATE TABLE login_attempts (
        id TEXT PRIMARY KEY,
        email_canonical TEXT NOT NULL,
        email_address TEXT NOT NULL,
        device_name TEXT,
        dpop_jkt TEXT NOT NULL,
        key_alg TEXT NOT NULL,
        device_half_hash TEXT NOT NULL,
        email_half_hash TEXT NOT NULL,
        signup_allowed INTEGER NOT NULL,
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        failed_count INTEGER NOT NULL DEFAULT 0,
        consumed_at BIGINT
    )""",
    "CREATE INDEX login_attempts_expires_at ON login_attempts (expires_at)",
    """CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users (id),
        attempt_id TEXT NOT NULL UNIQUE REFERENCES login_attempts (id),
        device_name TEXT,
        dpop_jkt TEXT NOT NULL,
        key_alg TEXT NOT NULL,
        auth_time BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        last_used_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        revoked_at BIGINT,
        revoked_reason TEXT
    )""",
    "CREATE INDEX sessions_user_id ON sessions (user_id)",
    """CREATE TABLE refresh_tokens (
        token_hash TEXT PRIMARY KEY,
        session_id TEXT NOT NULL REFERENCES sessions (id),
        created_at BIGINT NOT NULL,
        rotated_at BIGINT,
        child_hash TEXT,
        revoked_at BIGINT
    )""",
    "CREATE INDEX refresh_tokens_session_id ON refresh_tokens (session_id)",
    """CREATE TABLE dpop_replay (
        replay_key TEXT PRIMARY KEY,
        expires_at BIGINT NOT NULL
    )""",
    "CREATE INDEX dpop_replay_expires_at ON dpop_replay (expires_at)",
    """CREATE TABLE rate_limits (
        bucket TEXT NOT NULL,
        window_start BIGINT NOT NULL,
        hits INTEGER NOT NULL,
        expires_at BIGINT NOT NULL,
        PRIMARY KEY (bucket, window_start)
    )""",
    "CREATE INDEX rate_limits_expires_at ON rate_limits (expires_at)",
    """CREATE TABLE outbox (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        attempt_id TEXT,
        recipient TEXT NOT NULL,
        message_id TEXT NOT NULL,
        sealed_message TEXT,
        status TEXT NOT NULL,
        tries INTEGER NOT NULL DEFAULT 0,
        not_before BIGINT NOT NULL,
        lease_until BIGINT,
        created_at BIGINT NOT NULL,
        sent_at BIGINT,
        last_error TEXT
    )""",
    "CREATE INDEX outbox_due ON outbox (status, not_before)",
    "CREATE INDEX outbox_attempt_id ON outbox (attempt_id)",
    """CREATE TABLE signing_keys (
        kid TEXT PRIMARY KEY,
        alg TEXT NOT NULL,
        public_jwk TEXT NOT NULL,
        sealed_private_key TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        retired_at BIGINT
    )""",
]


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)
