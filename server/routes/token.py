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
from server.refresh import RefreshCommand
from server.routes.discovery import TOKEN_PATH
from server.services import Services, services
from server.sessions import REVOCATION, Revocation
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
        presented = form.get("refresh_token")
        if presented is None:
            raise MalformedInput("refresh_token is required")
        tokens = await svc.refresh.refresh(
            RefreshCommand(refresh_token=presented),
            proof=proof,
            client_ip=client_ip(request, svc.settings.trusted_proxies),
        )
    return JSONResponse(
        tokens.response_body(),
        headers={**TOKEN_RESPONSE_HEADERS, **svc.dpop.nonce_headers(AS_NONCES)},
    )


async def _revoke_session_of_token(
    svc: Services, token: str, hint: str | None
) -> Revocation | None:
    """End the session a refresh or access token belongs to, whatever the hint (RFC 7009
    §2.1): the hinted kind is looked up first, else the refresh token."""
    now = svc.clock.now()
    kinds = (
        ["access_token", "refresh_token"]
        if hint == "access_token"
        else ["refresh_token", "access_token"]
    )
    for kind in kinds:
        if kind == "refresh_token":
            revocation = await svc.sessions.revoke_by_refresh_token(
                token_hash=refresh_token_hash(svc.keyring.hmac_key, token), now=now
            )
            if revocation is not None:
                return revocation
        else:
            try:
                verified = verify_access_token(
                    token=token,
                    keys=svc.keys.verification_keys(),
                    issuer=svc.settings.issuer,
                    audience=svc.settings.token_audience,
                    now=now,
                )
            except InvalidToken:
                continue
            return await svc.sessions.revoke_session(session_id=verified.session_id, now=now)
    return None


async def revoke(request: Request) -> Response:
    """RFC 7009: 200 whether or not the token was known; the whole session ends."""
    svc = services(request)
    form = await read_form(request, limit=svc.settings.max_body_bytes)
    token = form.get("token")
    if token is None:
        raise MalformedInput("token is required")
    revocation = await _revoke_session_of_token(svc, token, form.get("token_type_hint"))
    if revocation is not None and revocation.ended:
        svc.login.emit(
            "session.revoked",
            session_id=revocation.session_id,
            reason=REVOCATION,
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
    found = await svc.sessions.inspect_refresh_token(
        token_hash=refresh_token_hash(svc.keyring.hmac_key, token), now=now
    )
    if found is None:
        return None
    # No token_type: RFC 7662 names access token types (RFC 6749 §7.1), and this is none.
    return {
        "active": True,
        "sub": found.user_id,
        "client_id": svc.settings.client_id,
        "iss": svc.settings.issuer,
        "exp": found.session_expires_at,
        "iat": found.created_at,
        "sid": found.session_id,
        "cnf": {"jkt": found.dpop_jkt},
    }
