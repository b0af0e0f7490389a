"""Rows of users, sessions and refresh tokens written straight into a test database, and DPoP
proofs as a verifier would hand them over, for the conformance tests of the session and refresh
stores (tests/storage/)."""

from __future__ import annotations

import secrets

from protocol.dpop import VerifiedDPoPProof
from protocol.keys import PublicKey
from support.backends import execute

JKT = "jkt-of-the-device-key"


def add_user(url: str, user_id: str, *, disabled_at: int | None = None) -> None:
    address = f"{user_id}@example.com"
    execute(
        url,
        "INSERT INTO users (id, email_canonical, email_address, created_at, disabled_at) "
        "VALUES (?, ?, ?, 1, ?)",
        user_id,
        address,
        address,
        disabled_at,
    )


def add_session(
    url: str,
    session_id: str,
    *,
    user_id: str,
    created_at: int = 1,
    last_used_at: int = 1,
    expires_at: int = 1000,
    revoked_at: int | None = None,
    device_name: str | None = None,
    jkt: str = JKT,
) -> None:
    """A session of `user_id`, with the consumed login attempt that opened it."""
    address = f"{user_id}@example.com"
    execute(
        url,
        "INSERT INTO login_attempts (id, email_canonical, email_address, dpop_jkt, key_alg, "
        "device_half_hash, email_half_hash, signup_allowed, created_at, expires_at, consumed_at) "
        "VALUES (?, ?, ?, ?, 'ES256', 'd', 'e', 1, 1, 9, 2)",
        "attempt-" + session_id,
        address,
        address,
        jkt,
    )
    execute(
        url,
        "INSERT INTO sessions (id, user_id, attempt_id, device_name, dpop_jkt, key_alg, "
        "auth_time, created_at, last_used_at, expires_at, revoked_at) "
        "VALUES (?, ?, ?, ?, ?, 'ES256', 1, ?, ?, ?, ?)",
        session_id,
        user_id,
        "attempt-" + session_id,
        device_name,
        jkt,
        created_at,
        last_used_at,
        expires_at,
        revoked_at,
    )


def add_refresh_token(
    url: str,
    token_hash: str,
    *,
    session_id: str,
    created_at: int = 1,
    rotated_at: int | None = None,
    child_hash: str | None = None,
    revoked_at: int | None = None,
) -> None:
    execute(
        url,
        "INSERT INTO refresh_tokens (token_hash, session_id, created_at, rotated_at, child_hash, "
        "revoked_at) VALUES (?, ?, ?, ?, ?, ?)",
        token_hash,
        session_id,
        created_at,
        rotated_at,
        child_hash,
        revoked_at,
    )


def proof(*, jkt: str = JKT) -> VerifiedDPoPProof:
    """A proof as the verifier returns it; only its `jkt` and replay key matter to storage."""

    def verify(signature: bytes, data: bytes) -> None:
        return None

    return VerifiedDPoPProof(
        key=PublicKey("ES256", {}, jkt, verify),
        jkt=jkt,
        jti=secrets.token_urlsafe(16),
        iat=1,
        htm="POST",
        htu="https://issuer.example/oauth2/token",
        nonce=None,
        replay_key=secrets.token_hex(32),
    )
