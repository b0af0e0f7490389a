"""RFC 8414 metadata and the JWKS."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from server.login import GRANT_TYPE_MAGIC_LINK
from server.services import services

LOGIN_START_PATH = "/v1/login/start"
TOKEN_PATH = "/oauth2/token"
REVOCATION_PATH = "/oauth2/revoke"
INTROSPECTION_PATH = "/oauth2/introspect"
JWKS_PATH = "/.well-known/jwks.json"
OPENAPI_PATH = "/openapi.json"

# The committed document is the one served: what a reviewer reads is what the server answers.
_OPENAPI_DOCUMENT = (Path(__file__).parent.parent / "static" / "openapi.json").read_bytes()


async def authorization_server_metadata(request: Request) -> Response:
    settings = services(request).settings
    return JSONResponse(
        {
            "issuer": settings.issuer,
            "token_endpoint": settings.endpoint(TOKEN_PATH),
            "login_start_endpoint": settings.endpoint(LOGIN_START_PATH),
            "revocation_endpoint": settings.endpoint(REVOCATION_PATH),
            "introspection_endpoint": settings.endpoint(INTROSPECTION_PATH),
            "jwks_uri": settings.endpoint(JWKS_PATH),
            "grant_types_supported": [GRANT_TYPE_MAGIC_LINK, "refresh_token"],
            # No authorization endpoint: no response type is supported (RFC 8414 §2).
            "response_types_supported": [],
            "token_endpoint_auth_methods_supported": ["none"],
            "revocation_endpoint_auth_methods_supported": ["none"],
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic"],
            "dpop_signing_alg_values_supported": ["ES256", "EdDSA"],
            # RFC 9449 defines no member for this; clients learn it up front instead of from a
            # first refused request (SPEC.md §6.9).
            "dpop_nonce_required": settings.use_dpop_nonce,
        },
        headers={"Cache-Control": "public, max-age=300"},
    )


async def jwks(request: Request) -> Response:
    # Short caching: a rotated key must reach resource servers before tokens it signs.
    return JSONResponse(
        services(request).keys.key_set.jwks, headers={"Cache-Control": "public, max-age=60"}
    )


async def openapi_document(request: Request) -> Response:
    return Response(
        _OPENAPI_DOCUMENT,
        media_type="application/json",
        headers={"Cache-Control": "public, max-age=300"},
    )
