"""Pre-seeding a migrated database with N users, each with one consumed login attempt, one live
session and one refresh token.

The rows are made by the database itself from random values (SQLite `randomblob`, PostgreSQL
`md5(random())`), of the sizes the server writes: 22-character ids, 64-character hashes,
43-character key thumbprints. No row passes through Python, so a million users take seconds.

Every key is random and spread over the whole key space, as the server's own keys are. What is
not random is the pairing: the i-th smallest user id goes with the i-th smallest address, attempt
id and session id, so every primary key and UNIQUE index is filled in key order. Indexes that do
not back a constraint are dropped before and built again after. The server's queries look rows
up by one key at a time, for which the pairing makes no difference, and the trees have the depth
that a million random keys give.

Columns are read from the database, so a migration that adds a nullable column or one with a
default needs no change here; a new required column stops the seeding with its name.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable

import psycopg

TABLES = ("users", "login_attempts", "sessions", "refresh_tokens")
DAY = 86_400
_ALG = "CASE WHEN s.i % 2 = 0 THEN 'EdDSA' ELSE 'ES256' END"

# Column -> expression over the seed table `s` (i, uid, aid, sid, email, jkt, created, hash).
_COLUMNS = {
    "users": {
        "id": "s.uid",
        "email_canonical": "s.email",
        "email_address": "s.email",
        "created_at": "s.created",
    },
    "login_attempts": {
        "id": "s.aid",
        "email_canonical": "s.email",
        "email_address": "s.email",
        "device_name": "'seeded device'",
        "dpop_jkt": "s.jkt",
        "key_alg": _ALG,
        "device_half_hash": "{hash}",
        "email_half_hash": "{hash}",
        "signup_allowed": "1",
        "created_at": "s.created",
        "expires_at": "s.created + 600",
        "failed_count": "0",
        "consumed_at": "s.created + 30",
    },
    "sessions": {
        "id": "s.sid",
        "user_id": "s.uid",
        "attempt_id": "s.aid",
        "device_name": "'seeded device'",
        "dpop_jkt": "s.jkt",
        "key_alg": _ALG,
        "auth_time": "s.created + 30",
        "created_at": "s.created + 30",
        "last_used_at": "s.created + 60",
        "expires_at": f"s.created + {30 * DAY}",
    },
    # Ordered by its random primary key: the refresh token hash.
    "refresh_tokens": {
        "token_hash": "s.hash",
        "session_id": "s.sid",
        "created_at": "s.created + 60",
    },
}
_ORDER = {"users": "s.i", "login_attempts": "s.i", "sessions": "s.i", "refresh_tokens": "s.hash"}


class Dialect:
    def __init__(
        self, random_hex: Callable[[int], str], sorted_values: Callable[[str, int, int], list[str]]
    ) -> None:
        self.random_hex = random_hex  # SQL for n random lowercase hex characters (n <= 64)
        self.sorted_values = sorted_values  # statements making k_<name>(i, v), i in v order

    def seed_sql(self, count: int, now: int) -> list[str]:
        statements: list[str] = []
        for name, chars in (("uid", 22), ("aid", 22), ("sid", 22), ("email", 16)):
            statements += self.sorted_values(name, chars, count)
        statements.append(
            "CREATE TEMP TABLE s AS SELECT u.i AS i, u.v AS uid, a.v AS aid, x.v AS sid, "
            "e.v || '@example.com' AS email, "
            f"{self.random_hex(43)} AS jkt, {self.random_hex(64)} AS hash, "
            f"{now} - ((u.i * 7919) % {20 * DAY}) - 60 AS created "
            "FROM k_uid u JOIN k_aid a ON a.i = u.i JOIN k_sid x ON x.i = u.i "
            "JOIN k_email e ON e.i = u.i"
        )
        return statements

    def insert_sql(self, table: str, columns: list[str]) -> str:
        expressions = [_COLUMNS[table][c].format(hash=self.random_hex(64)) for c in columns]
        return (
            f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(expressions)} "
            f"FROM s ORDER BY {_ORDER[table]}"
        )


def _sqlite_hex(chars: int) -> str:
    return f"substr(lower(hex(randomblob({(chars + 1) // 2}))), 1, {chars})"


def _sqlite_sorted(name: str, chars: int, count: int) -> list[str]:
    # The random values are stored before they are sorted: SQLite would otherwise evaluate
    # randomblob() once for the ORDER BY and again for the value it returns.
    return [
        f"CREATE TEMP TABLE r_{name} AS WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL "
        f"SELECT i + 1 FROM n WHERE i < {count}) SELECT {_sqlite_hex(chars)} AS v FROM n",
        f"CREATE TEMP TABLE k_{name} (i INTEGER PRIMARY KEY, v TEXT NOT NULL)",
        f"INSERT INTO k_{name} (v) SELECT v FROM r_{name} ORDER BY v",
        f"DROP TABLE r_{name}",
    ]


def _postgres_hex(chars: int) -> str:
    return f"substr(md5(random()::text) || md5(random()::text), 1, {chars})"


def _postgres_sorted(name: str, chars: int, count: int) -> list[str]:
    return [
        f"CREATE TEMP TABLE r_{name} AS SELECT {_postgres_hex(chars)} AS v "
        f"FROM generate_series(1, {count})",
        f"CREATE TEMP TABLE k_{name} AS SELECT row_number() OVER (ORDER BY v) AS i, v "
        f"FROM r_{name}",
        f"CREATE UNIQUE INDEX k_{name}_i ON k_{name} (i)",
        f"DROP TABLE r_{name}",
    ]


SQLITE = Dialect(_sqlite_hex, _sqlite_sorted)
POSTGRES = Dialect(_postgres_hex, _postgres_sorted)


def _columns(table: str, required: set[str], present: set[str]) -> list[str]:
    missing = required - set(_COLUMNS[table])
    if missing:
        raise RuntimeError(f"seeding {table}: no values for required columns {sorted(missing)}")
    return [c for c in _COLUMNS[table] if c in present]


def seed_sqlite(path: str, count: int, *, now: int | None = None) -> float:
    """Seed the SQLite database at `path`; returns the seconds it took."""
    started = time.perf_counter()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        conn.execute("PRAGMA journal_mode = OFF")
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("PRAGMA foreign_keys = OFF")
        conn.execute("PRAGMA temp_store = MEMORY")
        conn.execute("PRAGMA cache_size = -1000000")
        indexes = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
            f"AND tbl_name IN ({', '.join('?' * len(TABLES))})",
            TABLES,
        ).fetchall()
        conn.execute("BEGIN")
        for statement in SQLITE.seed_sql(count, now or int(time.time())):
            conn.execute(statement)
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        for table in TABLES:
            info = conn.execute(f"PRAGMA table_info({table})").fetchall()
            required = {c[1] for c in info if c[3] and c[4] is None and not c[5]}
            conn.execute(SQLITE.insert_sql(table, _columns(table, required, {c[1] for c in info})))
        for _, sql in indexes:
            conn.execute(sql)
        conn.execute("COMMIT")
        conn.execute("ANALYZE")
        conn.execute(f"PRAGMA journal_mode = {mode}")
    finally:
        conn.close()
    _to_disk(path)
    return time.perf_counter() - started


def _to_disk(path: str) -> None:
    """Written with synchronous = OFF, the rows are still in the page cache. A database that has
    grown this large over time is on disk; left as it is, the server's first checkpoint would
    fsync it all during the measurement (one took 2.3 s, and every commit waited behind it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def seed_postgres(url: str, count: int, *, now: int | None = None) -> float:
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=False) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET maintenance_work_mem = '256MB'")
        conn.execute("SET work_mem = '256MB'")
        indexes = conn.execute(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.schemaname = "
            "current_schema() AND i.tablename = ANY(%s) AND NOT EXISTS (SELECT 1 FROM "
            "pg_constraint c WHERE c.conname = i.indexname)",
            (list(TABLES),),
        ).fetchall()
        for statement in POSTGRES.seed_sql(count, now or int(time.time())):
            conn.execute(statement)  # type: ignore[arg-type]
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')  # type: ignore[arg-type]
        for table in TABLES:
            info = conn.execute(
                "SELECT column_name, is_nullable, column_default FROM information_schema.columns "
                "WHERE table_name = %s AND table_schema = current_schema()",
                (table,),
            ).fetchall()
            required = {c[0] for c in info if c[1] == "NO" and c[2] is None}
            columns = _columns(table, required, {c[0] for c in info})
            conn.execute(POSTGRES.insert_sql(table, columns))  # type: ignore[arg-type]
        for _, sql in indexes:
            conn.execute(sql)
        conn.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        for table in TABLES:
            conn.execute(f"VACUUM ANALYZE {table}")  # type: ignore[arg-type]
        # As `_to_disk` for SQLite: otherwise PostgreSQL's next checkpoint writes the seeding
        # out during a measurement, and one instance serves every database measured beside it.
        conn.execute("CHECKPOINT")
    return time.perf_counter() - started


def seed(database_url: str, count: int) -> float:
    """Seed the database `database_url` names (the server's URL form); returns seconds."""
    if database_url.startswith("sqlite"):
        return seed_sqlite(database_url.split("///", 1)[1], count)
    return seed_postgres(database_url, count)
