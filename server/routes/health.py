"""`/healthz` (the process answers) and `/readyz` (it can do its work), unauthenticated."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from server.health import check_readiness
from server.services import services

HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    readiness = await check_readiness(
        services(request), background_tasks=request.app.state.background_tasks
    )
    if readiness.ready:
        return JSONResponse({"status": "ready", "failed": []})
    return JSONResponse({"status": "not_ready", "failed": list(readiness.failed)}, status_code=503)
