"""`/v1/me`: who the caller is, and which session it uses."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from server.services import services


async def me(request: Request) -> Response:
    principal = await services(request).resource_guard.authenticate(request)
    session = principal.session
    return JSONResponse(
        {
            "user": {"id": principal.user_id, "email": session["email_address"]},
            "session": {
                "id": principal.session_id,
                "device_name": session["device_name"],
                "key_alg": session["key_alg"],
                "created_at": int(session["created_at"]),
                "last_used_at": int(session["last_used_at"]),
                "expires_at": int(session["expires_at"]),
                "auth_time": int(session["auth_time"]),
            },
        }
    )
