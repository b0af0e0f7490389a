"""The token endpoint (RFC 6749 §3.2): the split-secret grant and refresh; revocation
(RFC 7009) and introspection (RFC 7662)."""

from __future__ import annotations

import base64
import binascii
import hmac
from typing import Any
from urllib.parse import unquote_plus

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from protocol.access_token import verify_access_token
from protocol.errors import ErrorCode, InvalidToken, MalformedInput, SplitlinkError
from server.dpop.proof import AS_NONCES
from server.errors import UnsupportedGrantType
from server.http import client_ip, read_form
from server.login import GRANT_TYPE_MAGIC_LINK
from server.login_commands import CompleteLogin
from server.routes.discovery import TOKEN_PATH
from server.services import Services, services
from server.storage.database import Connection
from server.storage.sessions import revoke_session_rows
from server.tokens import refresh_token_hash

TOKEN_RESPONSE_HEADERS = {"Cache-Control": "no-store", "Pragma": "no-cache"}
GRANT_TYPE_REFRESH_TOKEN = "refresh_token"


class InvalidClient(SplitlinkError):
    code = ErrorCode.INVALID_CLIENT


async def token(request: Request) -> Response:
    svc = services(request)
    form = await read_form(request, limit=svc.settings.max_body_bytes)
    grant_type = form.get("grant_type")
    if grant_type is None:
        raise MalformedInput("grant_type is required")
    if grant_type not in (GRANT_TYPE_MAGIC_LINK, GRANT_TYPE_REFRESH_TOKEN):
        raise UnsupportedGrantType(f"grant_type {grant_type!r} is not supported")
    # RFC 9449 §5: every grant at this endpoint needs a proof.
    # Each grant records the proof in the replay store once its own input is well-formed.
    proof = svc.dpop.verify(request.headers, method="POST", path=TOKEN_PATH)
    if grant_type == GRANT_TYPE_MAGIC_LINK:
        tokens = await svc.login.complete(
            CompleteLogin(
                attempt_id=form.get("attempt_id"),
                device_half=form.get("device_half"),
                email_half=form.get("email_half"),
                proof=proof,
                client_ip=client_ip(request, svc.settings.trusted_proxies),
            )
        )
    else:
        tokens = await svc.refresh.refresh(
            form=form, proof=proof, client_ip=client_ip(request, svc.settings.trusted_proxies)
        )
    return JSONResponse(
        tokens.response_body(),
        headers={**TOKEN_RESPONSE_HEADERS, **svc.dpop.nonce_headers(AS_NONCES)},
    )


async def _session_of_token(svc: Services, token: str, hint: str | None) -> str | None:
    """The session a refresh or access token belongs to, whatever the hint (RFC 7009 §2.1)."""
    order = (
        ["access_token", "refresh_token"]
        if hint == "access_token"
        else [
            "refresh_token",
            "access_token",
        ]
    )
    for kind in order:
        if kind == "refresh_token":
            async with svc.db.autocommit() as conn:
                row = await conn.fetch_one(
                    "SELECT session_id FROM refresh_tokens WHERE token_hash = :hash",
                    {"hash": refresh_token_hash(svc.keyring.hmac_key, token)},
                )
            if row is not None:
                return str(row["session_id"])
        else:
            try:
                verified = verify_access_token(
                    token=token,
                    keys=svc.keys.verification_keys(),
                    issuer=svc.settings.issuer,
                    audience=svc.settings.token_audience,
                    now=svc.clock.now(),
                )
            except InvalidToken:
                continue
            return verified.session_id
    return None


async def revoke(request: Request) -> Response:
    """RFC 7009: 200 whether or not the token was known; the whole session ends."""
    svc = services(request)
    form = await read_form(request, limit=svc.settings.max_body_bytes)
    token = form.get("token")
    if token is None:
        raise MalformedInput("token is required")
    session_id = await _session_of_token(svc, token, form.get("token_type_hint"))
    if session_id is not None:
        found = session_id
        now = svc.clock.now()

        # One name for the stored reason and the event's (SPEC.md §6.8, §6.12).
        async def end(conn: Connection) -> bool:
            return await revoke_session_rows(conn, session_id=found, reason="revocation", now=now)

        ended = await svc.db.run(end)
        if ended:
            svc.login.emit(
                "session.revoked",
                session_id=session_id,
                reason="revocation",
                client_address=client_ip(request, svc.settings.trusted_proxies),
            )
    return Response(status_code=200, headers=TOKEN_RESPONSE_HEADERS)


def _authenticate_introspection_client(svc: Services, request: Request) -> str:
    values = request.headers.getlist("authorization")
    challenge = {"WWW-Authenticate": 'Basic realm="introspection"'}
    if len(values) != 1 or not values[0].lower().startswith("basic "):
        raise _InvalidClient(challenge)
    try:
        decoded = base64.b64decode(values[0][6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise _InvalidClient(challenge) from exc
    # RFC 6749 §2.3.1: both parts are form-urlencoded before they are joined.
    raw_id, _, raw_secret = decoded.partition(":")
    client_id, secret = unquote_plus(raw_id), unquote_plus(raw_secret)
    expected = svc.settings.introspection_clients.get(client_id)
    # Compare against something even for an unknown id, so timing does not tell ids apart.
    reference = expected.get_secret_value() if expected is not None else "\0" * 32
    if not hmac.compare_digest(secret.encode(), reference.encode()) or expected is None:
        raise _InvalidClient(challenge)
    return client_id


class _InvalidClient(InvalidClient):
    def __init__(self, headers: dict[str, str]) -> None:
        super().__init__("the caller is not an authorized resource server")
        self.headers = headers


async def introspect(request: Request) -> Response:
    """RFC 7662, for resource servers listed in SPLITLINK_INTROSPECTION_CLIENTS."""
    svc = services(request)
    _authenticate_introspection_client(svc, request)
    form = await read_form(request, limit=svc.settings.max_body_bytes)
    token = form.get("token")
    if token is None:
        raise MalformedInput("token is required")
    now = svc.clock.now()
    # Both kinds are always searched, whatever the hint says (RFC 7662 §2.1 lets the hint
    # only speed the search; each lookup here is one indexed query anyway).
    found = await _introspect_refresh_token(svc, token, now)
    if found is None:
        found = await _introspect_access_token(svc, token, now)
    return JSONResponse(found or {"active": False}, headers=TOKEN_RESPONSE_HEADERS)


async def _introspect_access_token(svc: Services, token: str, now: int) -> dict[str, Any] | None:
    try:
        verified = verify_access_token(
            token=token,
            keys=svc.keys.verification_keys(),
            issuer=svc.settings.issuer,
            audience=svc.settings.token_audience,
            now=now,
        )
    except InvalidToken:
        return None
    if await svc.sessions.inspect(verified, now=now) is None:
        return None
    return {
        "active": True,
        "token_type": "DPoP",
        "sub": verified.subject,
        "client_id": verified.client_id,
        "iss": svc.settings.issuer,
        "aud": svc.settings.token_audience,
        "exp": verified.expires_at,
        "iat": verified.issued_at,
        "jti": verified.jti,
        "sid": verified.session_id,
        "cnf": {"jkt": verified.jkt},
    }


async def _introspect_refresh_token(svc: Services, token: str, now: int) -> dict[str, Any] | None:
    async with svc.db.autocommit() as conn:
        row = await conn.fetch_one(
            "SELECT s.id, s.user_id, s.dpop_jkt, s.expires_at, rt.created_at "
            "FROM refresh_tokens rt JOIN sessions s ON s.id = rt.session_id "
            "JOIN users u ON u.id = s.user_id "
            "WHERE rt.token_hash = :hash AND rt.rotated_at IS NULL AND rt.revoked_at IS NULL "
            "AND s.revoked_at IS NULL AND s.expires_at > :now AND s.last_used_at > :idle "
            "AND u.disabled_at IS NULL",
            {
                "hash": refresh_token_hash(svc.keyring.hmac_key, token),
                "now": now,
                "idle": now - svc.settings.session_idle_timeout,
            },
        )
    if row is None:
        return None
    # No token_type: RFC 7662 names access token types (RFC 6749 §7.1), and this is none.
    return {
        "active": True,
        "sub": row["user_id"],
        "client_id": svc.settings.client_id,
        "iss": svc.settings.issuer,
        "exp": int(row["expires_at"]),
        "iat": int(row["created_at"]),
        "sid": row["id"],
        "cnf": {"jkt": row["dpop_jkt"]},
    }
