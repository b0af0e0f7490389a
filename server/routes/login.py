"""Login start and the harmless landing page of the emailed link."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from server.dpop_guard import AS_NONCES
from server.http import client_ip, read_json_object
from server.routes.discovery import LOGIN_START_PATH
from server.services import services

_LANDING_PAGE = (Path(__file__).parent.parent / "static" / "landing.html").read_bytes()
_LANDING_HEADERS = {
    # No script, no style, no frame, no form: the page is inert, and the secret in the fragment
    # stays in the address bar of whoever opened it.
    "Content-Security-Policy": (
        "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
}


async def start_login(request: Request) -> Response:
    svc = services(request)
    proof = svc.dpop.verify(request.headers, method="POST", path=LOGIN_START_PATH)
    body = await read_json_object(request, limit=svc.settings.max_body_bytes)
    started = await svc.login.start(
        email=body.get("email"),
        device_name=body.get("device_name"),
        proof=proof,
        client_ip=client_ip(request, svc.settings.trusted_proxies),
    )
    return JSONResponse(
        {
            "attempt_id": started.attempt_id,
            "device_half": started.device_half,
            "expires_in": started.expires_in,
        },
        status_code=202,
        headers={
            "Cache-Control": "no-store",
            "Pragma": "no-cache",
            **svc.dpop.nonce_headers(AS_NONCES),
        },
    )


async def landing_page(request: Request) -> Response:
    if request.method == "OPTIONS":
        return Response(
            status_code=204, headers={"Allow": "GET, HEAD, OPTIONS", **_LANDING_HEADERS}
        )
    return HTMLResponse(_LANDING_PAGE, headers=_LANDING_HEADERS)
