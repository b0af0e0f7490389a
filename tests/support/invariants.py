"""The invariants every fault test ends with (docs/design.md §10)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from support.backends import dump, query

_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")
# What an audit row's details may name (SPEC.md §6.12): identifiers and outcomes, no secret.
_AUDIT_DETAILS = {"session_id", "attempt_id", "reason", "count", "outbox_id"}


def violations(database_url: str, *, secrets: Iterable[str] = ()) -> list[str]:
    found: list[str] = []
    for attempt_id, sessions in query(
        database_url,
        "SELECT a.id, COUNT(s.id) FROM login_attempts a LEFT JOIN sessions s "
        "ON s.attempt_id = a.id WHERE a.consumed_at IS NOT NULL GROUP BY a.id "
        "HAVING COUNT(s.id) <> 1",
    ):
        found.append(f"consumed attempt {attempt_id} has {sessions} sessions")
    for (session_id,) in query(
        database_url,
        "SELECT s.id FROM sessions s LEFT JOIN login_attempts a ON a.id = s.attempt_id "
        "WHERE a.id IS NULL OR a.consumed_at IS NULL",
    ):
        found.append(f"session {session_id} has no consumed attempt")
    for session_id, live in query(
        database_url,
        "SELECT session_id, COUNT(*) FROM refresh_tokens "
        "WHERE rotated_at IS NULL AND revoked_at IS NULL GROUP BY session_id HAVING COUNT(*) > 1",
    ):
        found.append(f"session {session_id} has {live} live refresh tokens")
    for (session_id,) in query(
        database_url,
        "SELECT s.id FROM sessions s WHERE NOT EXISTS "
        "(SELECT 1 FROM refresh_tokens r WHERE r.session_id = s.id)",
    ):
        found.append(f"session {session_id} has no refresh token")
    for column, table in (
        ("device_half_hash", "login_attempts"),
        ("email_half_hash", "login_attempts"),
        ("token_hash", "refresh_tokens"),
    ):
        for (value,) in query(database_url, f"SELECT {column} FROM {table}"):  # noqa: S608
            if not _HEX_DIGEST.fullmatch(value):
                found.append(f"{table}.{column} holds something other than a digest")
    for (session_id,) in query(
        database_url,
        "SELECT s.id FROM sessions s JOIN users u ON u.id = s.user_id "
        "WHERE u.disabled_at IS NOT NULL AND s.revoked_at IS NULL",
    ):
        found.append(f"session {session_id} of a disabled user was not ended")
    for row_id, details in query(database_url, "SELECT id, details FROM audit_events"):
        members = json.loads(details)
        if not isinstance(members, dict) or not set(members) <= _AUDIT_DETAILS:
            found.append(f"audit row {row_id} holds details beyond identifiers and outcomes")
    text = dump(database_url)
    found.extend(f"a secret rests in the database: {s[:6]}…" for s in secrets if s in text)
    return found
