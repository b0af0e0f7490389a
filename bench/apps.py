"""The reference endpoints `/v1/me` is compared with.

- `bare_app`: a Starlette JSON endpoint and nothing else.
- `p256_app` / `ed25519_app`: the same endpoint plus exactly one signature verification per
  request: the signature of the request's DPoP proof, checked with the device's public key
  (loaded once at start from BENCH_DEVICE_JWK) through the same `PublicKey.verify` the server
  uses. This is the ceiling that one verification imposes; nothing else of DPoP is checked.
- `ed25519_stored_app` / `p256_stored_app`: the floor under the requirements of `/v1/me`. The
  same verification, then the least storage work that shared replay protection and a revocation
  seen at once need: one new replay entry written to an SQLite table and one session row read
  by its key, with the server's table layout and settings (WAL, synchronous=NORMAL, the
  connection driven from the event loop, no thread hop), and nothing else: no proof parsing, no
  claims, no token. Each request writes a random 16-byte key, so every insert is a real one
  although the proofs are reused. `/v1/me` cannot be faster than this.

All three answer a JSON body of the same shape as `/v1/me`, at the same path, so that the load
generator sends byte-for-byte the same requests to every app.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time

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


_FLOOR_SCHEMA = (
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = NORMAL",
    # As migration 0003 lays the server's out: the key is the B-tree's own key.
    "CREATE TABLE IF NOT EXISTS dpop_replay (replay_key BLOB PRIMARY KEY, "
    "expires_at BIGINT NOT NULL) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS dpop_replay_expires_at ON dpop_replay (expires_at)",
    "CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, revoked_at BIGINT)",
    "INSERT OR IGNORE INTO sessions (id, revoked_at) VALUES ('floor', NULL)",
)


def _floor_database() -> sqlite3.Connection:
    conn = sqlite3.connect(os.environ["BENCH_FLOOR_DATABASE"], isolation_level=None)
    for statement in _FLOOR_SCHEMA:
        conn.execute(statement)
    return conn


def _session_live_after_replay_entry(conn: sqlite3.Connection) -> bool:
    conn.execute(
        "INSERT INTO dpop_replay (replay_key, expires_at) VALUES (?, ?)",
        (os.urandom(16), int(time.time()) + 120),
    )
    row = conn.execute("SELECT revoked_at FROM sessions WHERE id = 'floor'").fetchone()
    return row is not None and row[0] is None


def _verifying_app(alg: str, *, floor: bool = False) -> Starlette:
    key: PublicKey = parse_public_jwk(json.loads(os.environ["BENCH_DEVICE_JWK"]), alg=alg)
    conn = _floor_database() if floor else None

    async def me(request: Request) -> Response:
        proof = request.headers.get("dpop")
        if proof is None:
            return JSONResponse({"error": "invalid_dpop_proof"}, status_code=401)
        signing_input, _, signature = proof.rpartition(".")
        key.verify(signature=b64url_decode(signature), data=signing_input.encode("ascii"))
        if conn is not None and not _session_live_after_replay_entry(conn):
            return JSONResponse({"error": "invalid_token"}, status_code=401)
        return JSONResponse(_BODY)

    return Starlette(routes=[Route("/v1/me", me)])


def p256_app() -> Starlette:
    return _verifying_app("ES256")


def ed25519_app() -> Starlette:
    return _verifying_app("EdDSA")


def p256_stored_app() -> Starlette:
    return _verifying_app("ES256", floor=True)


def ed25519_stored_app() -> Starlette:
    return _verifying_app("EdDSA", floor=True)
