"""Login start and the harmless landing page of the emailed link."""

from __future__ import annotations

import base64
import hashlib
import html
from functools import lru_cache
from pathlib import Path
from string import Template

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from server.dpop.proof import AS_NONCES
from server.http import client_ip, read_json_object
from server.login_commands import StartLogin
from server.routes.discovery import LOGIN_START_PATH
from server.services import services

_STATIC = Path(__file__).parent.parent / "static"
_LANDING_TEMPLATE = Template((_STATIC / "landing.html").read_text(encoding="utf-8"))
# The page's only style, served inside its one <style> element exactly as read here: the CSP
# allows that element by the hash of this text (CSP3 "hash-source") and nothing else.
LANDING_STYLE = (_STATIC / "landing.css").read_text(encoding="utf-8")
LANDING_STYLE_HASH = (
    "sha256-" + base64.b64encode(hashlib.sha256(LANDING_STYLE.encode("utf-8")).digest()).decode()
)
_OPEN_APP = Template(
    '<div class="open-app">\n'
    "<p>On that phone, but the link opened here instead of in the app?</p>\n"
    '<p><a href="$href">Open $app_name</a></p>\n'
    '<p class="hint">This only opens the app: it cannot carry the sign-in, which stays in the '
    "link. If the app does not finish signing in, go back to the email and tap the link again, "
    "or long-press it and choose to open it in $app_name.</p>\n"
    "</div>"
)
_LANDING_HEADERS = {
    # No script, no frame, no form, no fetch of anything: the page is inert, and the secret in
    # the fragment stays in the address bar of whoever opened it. Its style is inline, by hash.
    "Content-Security-Policy": (
        f"default-src 'none'; style-src '{LANDING_STYLE_HASH}'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
}


async def start_login(request: Request) -> Response:
    svc = services(request)
    proof = svc.dpop.verify(request.headers, method="POST", path=LOGIN_START_PATH)
    body = await read_json_object(request, limit=svc.settings.max_body_bytes)
    started = await svc.login.start(
        StartLogin(
            email=body.get("email"),
            device_name=body.get("device_name"),
            proof=proof,
            client_ip=client_ip(request, svc.settings.trusted_proxies),
        )
    )
    return JSONResponse(
        {
            "attempt_id": started.attempt_id,
            "device_half": started.device_half,
            "expires_in": started.expires_in,
            "check_phrase": started.check_phrase,
        },
        status_code=202,
        headers={
            "Cache-Control": "no-store",
            "Pragma": "no-cache",
            **svc.dpop.nonce_headers(AS_NONCES),
        },
    )


@lru_cache(maxsize=8)
def landing_page_html(app_name: str, app_link_scheme: str | None) -> bytes:
    """The page for one configuration: fixed text and style, the app name, and with an app
    scheme an "Open the app" link to `<scheme>://login`. The page has no script, so nothing on it
    can read the fragment: the secret never reaches that link (SPEC.md §6.10)."""
    name = html.escape(app_name, quote=True)
    open_app = ""
    if app_link_scheme is not None:
        href = html.escape(f"{app_link_scheme}://login", quote=True)
        open_app = _OPEN_APP.substitute(href=href, app_name=name)
    return _LANDING_TEMPLATE.substitute(
        app_name=name,
        app_initial=html.escape(app_name[:1].upper(), quote=True),
        open_app=open_app,
        style=LANDING_STYLE,
    ).encode("utf-8")


async def landing_page(request: Request) -> Response:
    if request.method == "OPTIONS":
        return Response(
            status_code=204, headers={"Allow": "GET, HEAD, OPTIONS", **_LANDING_HEADERS}
        )
    settings = services(request).settings
    page = landing_page_html(settings.app_name, settings.app_link_scheme)
    return HTMLResponse(page, headers=_LANDING_HEADERS)
