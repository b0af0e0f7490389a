"""App association files: the OS opens `{public_url}/l` links in the app, not in a browser
(SPEC.md §5.4, §6.10).

Both are JSON built from settings alone, served at their fixed paths with no redirect, and 404
when their setting is empty. They name apps, never a secret.
"""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from protocol.link import LOGIN_LINK_PATH
from server.services import services
from server.settings import Settings

APPLE_PATH = "/.well-known/apple-app-site-association"
ANDROID_PATH = "/.well-known/assetlinks.json"


def apple_app_site_association(settings: Settings) -> dict[str, Any]:
    """Universal links (iOS 13 and later read `components`; `paths` is the earlier form)."""
    return {
        "applinks": {
            "apps": [],
            "details": [
                {
                    "appIDs": list(settings.apple_app_ids),
                    "components": [{"/": LOGIN_LINK_PATH, "comment": "login links"}],
                    "paths": [LOGIN_LINK_PATH],
                }
            ],
        }
    }


def android_asset_links(settings: Settings) -> list[dict[str, Any]]:
    """Android App Links: each app may handle every URL of this origin, `/l` in practice."""
    return [
        {
            "relation": ["delegate_permission/common.handle_all_urls"],
            "target": {
                "namespace": "android_app",
                "package_name": app.package_name,
                "sha256_cert_fingerprints": list(app.sha256_cert_fingerprints),
            },
        }
        for app in settings.android_apps
    ]


async def apple(request: Request) -> Response:
    settings = services(request).settings
    if not settings.apple_app_ids:
        raise HTTPException(status_code=404)
    return JSONResponse(apple_app_site_association(settings))


async def android(request: Request) -> Response:
    settings = services(request).settings
    if not settings.android_apps:
        raise HTTPException(status_code=404)
    return JSONResponse(android_asset_links(settings))
