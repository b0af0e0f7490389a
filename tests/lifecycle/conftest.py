"""Fixtures for the token-lifecycle tests: refresh, revocation, introspection, key rotation,
server nonces and `protect()` (threats.md A11, B8, B10, G1-G7).

Helpers are reached through the `ops` fixture, never by `from conftest import`:
with several test directories in one run, the module named `conftest` may be another
directory's.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from support.device import Device
from support.harness import Harness

from protocol.access_token import issue_access_token
from protocol.encoding import b64url_decode, b64url_encode

INTROSPECTION_CLIENT = ("orders-api", "introspection-secret-0123456789abcdef")


@pytest.fixture
def server_settings() -> dict[str, Any]:
    """Every `server` here accepts one introspection client."""
    return {"introspection_clients": {INTROSPECTION_CLIENT[0]: INTROSPECTION_CLIENT[1]}}


@dataclass
class SignedIn:
    device: Device
    tokens: dict[str, Any]

    @property
    def access_token(self) -> str:
        value: str = self.tokens["access_token"]
        return value

    @property
    def refresh_token(self) -> str:
        value: str = self.tokens["refresh_token"]
        return value

    @property
    def session_id(self) -> str:
        value: str = Ops.claims(self.access_token)["sid"]
        return value


class Ops:
    """Token-lifecycle requests against one in-process server."""

    introspection_client = INTROSPECTION_CLIENT

    def __init__(self, server: Harness) -> None:
        self.server = server

    # JWTs and credentials

    @staticmethod
    def _part(token: str, index: int) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(b64url_decode(token.split(".")[index]))
        return value

    @staticmethod
    def header(token: str) -> dict[str, Any]:
        return Ops._part(token, 0)

    @staticmethod
    def claims(token: str) -> dict[str, Any]:
        return Ops._part(token, 1)

    @staticmethod
    def basic(client_id: str, secret: str) -> str:
        return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()

    # Requests

    async def sign_in(
        self, email: str = "a@example.com", *, alg: str = "EdDSA", **kwargs: Any
    ) -> SignedIn:
        device = self.server.device(alg)
        return SignedIn(device=device, tokens=await self.server.login(device, email, **kwargs))

    async def refresh(
        self,
        device: Device,
        refresh_token: str | None,
        *,
        proof: str | None = None,
        with_proof: bool = True,
    ) -> httpx.Response:
        form = {"grant_type": "refresh_token"}
        if refresh_token is not None:
            form["refresh_token"] = refresh_token
        headers = {}
        if with_proof:
            headers["DPoP"] = proof or device.proof("POST", "/oauth2/token")
        return await self.server.client.post("/oauth2/token", data=form, headers=headers)

    async def call(
        self, device: Device, method: str, path: str, access_token: str
    ) -> httpx.Response:
        """A request to a DPoP-protected /v1 endpoint with a fresh proof by `device`."""
        return await self.server.client.request(
            method,
            path,
            headers={
                "Authorization": f"DPoP {access_token}",
                "DPoP": device.proof(method, path, access_token=access_token),
            },
        )

    async def revoke(self, token: str, hint: str | None = None) -> httpx.Response:
        form = {"token": token}
        if hint is not None:
            form["token_type_hint"] = hint
        return await self.server.client.post("/oauth2/revoke", data=form)

    async def introspect(
        self,
        token: str,
        *,
        hint: str | None = None,
        authorization: str | None = basic(*INTROSPECTION_CLIENT),
    ) -> httpx.Response:
        form = {"token": token}
        if hint is not None:
            form["token_type_hint"] = hint
        headers = {} if authorization is None else {"Authorization": authorization}
        return await self.server.client.post("/oauth2/introspect", data=form, headers=headers)

    # Server state

    def events(self, name: str) -> list[dict[str, Any]]:
        return [event.fields for event in self.server.events if event.name == name]

    def refresh_rows(self, session_id: str) -> list[tuple[Any, ...]]:
        """(token_hash, rotated_at, child_hash, revoked_at) of each refresh token of the session,
        in rotation order (parent before child)."""
        rows = self.server.query(
            "SELECT token_hash, rotated_at, child_hash, revoked_at FROM refresh_tokens "
            "WHERE session_id = ?",
            session_id,
        )
        children = {row[2] for row in rows if row[2] is not None}
        by_hash = {row[0]: row for row in rows}
        chain = [row for row in rows if row[0] not in children]
        assert len(chain) <= 1, f"the family has {len(chain)} roots: {rows}"
        while chain and chain[-1][2] is not None and chain[-1][2] in by_hash:
            chain.append(by_hash[chain[-1][2]])
        assert len(chain) == len(rows), f"the family is not one chain: {rows}"
        return chain

    def mint_access_token(self, like: str, *, lifetime: int = 600) -> str:
        """An access token for the same session, user and key as `like`, issued now by the
        server's current key: it probes the session check when every real token has expired."""
        claims = self.claims(like)
        current = self.server.app.state.services.keys.key_set.current
        return issue_access_token(
            key=current.key,
            kid=current.kid,
            issuer=claims["iss"],
            audience=claims["aud"],
            subject=claims["sub"],
            client_id=claims["client_id"],
            session_id=claims["sid"],
            jkt=claims["cnf"]["jkt"],
            jti=b64url_encode(os.urandom(16)),
            issued_at=self.server.clock.now(),
            lifetime=lifetime,
            auth_time=claims["auth_time"],
        )


@pytest.fixture
def ops(server: Harness) -> Ops:
    return Ops(server)
