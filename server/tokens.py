"""Issuing the token pair of a session: a JWT access token and an opaque refresh token."""

from __future__ import annotations

from dataclasses import dataclass

from protocol.access_token import issue_access_token
from protocol.encoding import b64url_encode
from protocol.split_secret import keyed_hash, new_opaque_token
from server.clock import RandomBytes
from server.settings import Settings
from server.signing_keys import KeySet


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    # Whose tokens they are, for the security events; never part of the answer.
    user_id: str | None = None
    session_id: str | None = None

    def __repr__(self) -> str:
        return f"TokenPair(expires_in={self.expires_in})"

    def response_body(self) -> dict[str, str | int]:
        """RFC 6749 §5.1 with RFC 9449 §5 token_type."""
        return {
            "access_token": self.access_token,
            "token_type": "DPoP",
            "expires_in": self.expires_in,
            "refresh_token": self.refresh_token,
        }


def refresh_token_hash(hmac_key: bytes, refresh_token: str) -> str:
    return keyed_hash(key=hmac_key, purpose="refresh-token", value=refresh_token).hex()


def child_refresh_token(hmac_key: bytes, parent: str) -> str:
    """The token that replaces `parent` at rotation: a function of the parent and the server key,
    so a retry within the grace window gets the same child without the child being stored."""
    return b64url_encode(keyed_hash(key=hmac_key, purpose="refresh-child", value=parent))


def mint_access_token(
    *,
    settings: Settings,
    keys: KeySet,
    random_bytes: RandomBytes,
    user_id: str,
    session_id: str,
    jkt: str,
    auth_time: int,
    now: int,
    session_expires_at: int | None = None,
) -> tuple[str, int]:
    """An access token and its lifetime in seconds."""
    lifetime = settings.access_token_lifetime
    if session_expires_at is not None:
        # An access token never outlives its session.
        lifetime = max(0, min(lifetime, session_expires_at - now))
    token = issue_access_token(
        key=keys.current.key,
        kid=keys.current.kid,
        issuer=settings.issuer,
        audience=settings.token_audience,
        subject=user_id,
        client_id=settings.client_id,
        session_id=session_id,
        jkt=jkt,
        jti=b64url_encode(random_bytes(16)),
        issued_at=now,
        lifetime=lifetime,
        auth_time=auth_time,
    )
    return token, lifetime


def new_refresh_token(*, hmac_key: bytes, random_bytes: RandomBytes) -> tuple[str, str]:
    """A fresh refresh token, and the hash that stores it (never the token)."""
    refresh_token = new_opaque_token(random_bytes)
    return refresh_token, refresh_token_hash(hmac_key, refresh_token)
