"""The reference endpoints `/v1/me` is compared with.

- `bare_app`: a Starlette JSON endpoint and nothing else.
- `p256_app` / `ed25519_app`: the same endpoint plus exactly one signature verification per
  request: the signature of the request's DPoP proof, checked with the device's public key
  (loaded once at start from BENCH_DEVICE_JWK) through the same `PublicKey.verify` the server
  uses. This is the ceiling that one verification imposes; nothing else of DPoP is checked.

All three answer a JSON body of the same shape as `/v1/me`, at the same path, so that the load
generator sends byte-for-byte the same requests to every app.
"""

from __future__ import annotations

import json
import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from protocol.encoding import b64url_decode
from protocol.keys import PublicKey, parse_public_jwk

_BODY = {
    "user": {"id": "x" * 22, "email": "bench@example.com"},
    "session": {
        "id": "y" * 22,
        "device_name": None,
        "key_alg": "EdDSA",
        "created_at": 0,
        "last_used_at": 0,
        "expires_at": 0,
        "auth_time": 0,
    },
}


async def _me(request: Request) -> Response:
    return JSONResponse(_BODY)


def bare_app() -> Starlette:
    return Starlette(routes=[Route("/v1/me", _me)])


def _verifying_app(alg: str) -> Starlette:
    key: PublicKey = parse_public_jwk(json.loads(os.environ["BENCH_DEVICE_JWK"]), alg=alg)

    async def me(request: Request) -> Response:
        proof = request.headers.get("dpop")
        if proof is None:
            return JSONResponse({"error": "invalid_dpop_proof"}, status_code=401)
        signing_input, _, signature = proof.rpartition(".")
        key.verify(signature=b64url_decode(signature), data=signing_input.encode("ascii"))
        return JSONResponse(_BODY)

    return Starlette(routes=[Route("/v1/me", me)])


def p256_app() -> Starlette:
    return _verifying_app("ES256")


def ed25519_app() -> Starlette:
    return _verifying_app("EdDSA")
