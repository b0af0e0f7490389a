"""Refresh-token rows: a token rests as its keyed hash, never in plain form."""

from __future__ import annotations

from server.storage.database import Statement

_NEW_TOKEN = (
    "INSERT INTO refresh_tokens (token_hash, session_id, created_at) "
    "VALUES (:hash, :session_id, :now)"
)


def refresh_token_row(*, token_hash: str, session_id: str, now: int) -> Statement:
    """The insert that stores a session's new refresh token by its hash."""
    return (_NEW_TOKEN, {"hash": token_hash, "session_id": session_id, "now": now})
