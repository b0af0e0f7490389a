"""The token endpoint (RFC 6749 §3.2): the split-secret grant, and refresh."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from protocol.errors import MalformedInput
from server.errors import UnsupportedGrantType
from server.http import client_ip, read_form
from server.login import GRANT_TYPE_MAGIC_LINK
from server.routes.discovery import TOKEN_PATH
from server.services import services

TOKEN_RESPONSE_HEADERS = {"Cache-Control": "no-store", "Pragma": "no-cache"}


async def token(request: Request) -> Response:
    svc = services(request)
    form = await read_form(request, limit=svc.settings.max_body_bytes)
    grant_type = form.get("grant_type")
    if grant_type is None:
        raise MalformedInput("grant_type is required")
    if grant_type != GRANT_TYPE_MAGIC_LINK:
        raise UnsupportedGrantType(f"grant_type {grant_type!r} is not supported")
    # RFC 9449 §5: every grant at this endpoint needs a proof.
    proof = await svc.dpop.verify_and_record(request, path=TOKEN_PATH)
    tokens = await svc.login.complete(
        form=form, proof=proof, client_ip=client_ip(request, svc.settings.trusted_proxies)
    )
    return JSONResponse(tokens.response_body(), headers=TOKEN_RESPONSE_HEADERS)
