"""The signed-in user's own endpoints. `DPoPAuthMiddleware` has authenticated every request
that reaches these handlers (see the route table in server/app.py)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from protocol.errors import ErrorCode, SplitlinkError
from server.dpop.guard import Principal
from server.dpop.middleware import principal_of
from server.http import client_ip
from server.services import services
from server.sessions import LiveSession


class SessionNotFound(SplitlinkError):
    code = ErrorCode.NOT_FOUND


async def me(request: Request) -> Response:
    # The guard of these endpoints looks sessions up with the session store.
    principal: Principal[LiveSession] = principal_of(request.scope)
    session = principal.session
    return JSONResponse(
        {
            "user": {"id": principal.user_id, "email": session.email_address},
            "session": {
                "id": principal.session_id,
                "device_name": session.device_name,
                "key_alg": session.key_alg,
                "created_at": session.created_at,
                "last_used_at": session.last_used_at,
                "expires_at": session.expires_at,
                "auth_time": session.auth_time,
            },
        }
    )


async def list_sessions(request: Request) -> Response:
    principal = principal_of(request.scope)
    svc = services(request)
    sessions = await svc.sessions.list_live(principal.user_id, now=svc.clock.now())
    return JSONResponse(
        {
            "sessions": [
                {
                    "id": session.id,
                    "device_name": session.device_name,
                    "key_alg": session.key_alg,
                    "created_at": session.created_at,
                    "last_used_at": session.last_used_at,
                    "expires_at": session.expires_at,
                    "current": session.id == principal.session_id,
                }
                for session in sessions
            ]
        }
    )


async def end_session(request: Request) -> Response:
    principal = principal_of(request.scope)
    svc = services(request)
    session_id = request.path_params["session_id"]
    ended = await svc.sessions.end(
        session_id, user_id=principal.user_id, reason="ended_by_user", now=svc.clock.now()
    )
    if not ended:
        # Another user's session answers exactly as an unknown one.
        raise SessionNotFound("no such session")
    svc.login.emit(
        "session.revoked",
        session_id=session_id,
        subject=principal.user_id,
        reason="ended_by_user",
        client_address=client_ip(request, svc.settings.trusted_proxies),
    )
    return Response(status_code=204)


async def logout(request: Request) -> Response:
    principal = principal_of(request.scope)
    svc = services(request)
    await svc.sessions.end(
        principal.session_id, user_id=principal.user_id, reason="logout", now=svc.clock.now()
    )
    svc.login.emit(
        "session.revoked",
        session_id=principal.session_id,
        subject=principal.user_id,
        reason="logout",
        client_address=client_ip(request, svc.settings.trusted_proxies),
    )
    return Response(status_code=204)


async def logout_all(request: Request) -> Response:
    principal = principal_of(request.scope)
    svc = services(request)
    count = await svc.sessions.end_all(principal.user_id, reason="logout_all", now=svc.clock.now())
    svc.login.emit(
        "sessions.revoked_all",
        user_id=principal.user_id,
        count=count,
        client_address=client_ip(request, svc.settings.trusted_proxies),
    )
    return Response(status_code=204)
