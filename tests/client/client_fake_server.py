"""An in-memory splitlink server for client tests, served through `httpx.MockTransport`.

It checks every DPoP proof with protocol's own verifier (method, URL, iat window, ath, replayed
jti), binds the login attempt and the tokens to the proof key's thumbprint, rotates refresh tokens
and can demand DPoP nonces, so the client is tested against the rules and not against itself.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx
from splitlink_client import SplitlinkClient

from protocol.dpop import VerifiedDPoPProof, verify_dpop_proof
from protocol.errors import InvalidDPoPProof
from protocol.link import build_login_link
from protocol.split_secret import new_login_secrets, new_opaque_token

ISSUER = "https://splitlink.test"
MAGIC_LINK_GRANT = "urn:splitlink:params:oauth:grant-type:magic-link"
ATTEMPT_TTL = 900
ACCESS_TOKEN_TTL = 300


class FakeClock:
    def __init__(self, now: int = 1_700_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: int) -> None:
        self.now += seconds


class Refusal(Exception):
    def __init__(
        self,
        status: int,
        error: str,
        description: str = "refused",
        *,
        headers: dict[str, str] | None = None,
        in_header: bool = False,
    ) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.description = description
        self.headers = headers or {}
        self.in_header = in_header

    def response(self) -> httpx.Response:
        if self.in_header:
            challenge = f'DPoP error="{self.error}", error_description="{self.description}"'
            return httpx.Response(
                self.status, headers={"WWW-Authenticate": challenge, **self.headers}
            )
        body = {"error": self.error, "error_description": self.description}
        return httpx.Response(self.status, json=body, headers=self.headers)


@dataclass
class Attempt:
    email: str
    device_half: str
    email_half: str
    jkt: str
    device_name: str | None
    expires_at: int
    used: bool = False


@dataclass
class Session:
    id: str
    email: str
    jkt: str
    device_name: str | None
    refresh_token: str
    access_tokens: set[str] = field(default_factory=set)
    ended: bool = False


@dataclass
class Seen:
    """One request as the server received it, with its verified proof if it had one."""

    request: httpx.Request
    proof: VerifiedDPoPProof | None = None


class FakeServer:
    def __init__(self, clock: FakeClock, *, issuer: str = ISSUER) -> None:
        self.clock = clock
        self.issuer = issuer
        self.metadata_issuer = issuer
        self.seen: list[Seen] = []
        self.outbox: dict[str, str] = {}
        self.attempts: dict[str, Attempt] = {}
        self.sessions: dict[str, Session] = {}
        self.access_tokens: dict[str, tuple[str, int]] = {}
        self.replay_keys: set[str] = set()
        self.require_nonce = False
        self.nonce = "nonce-" + new_opaque_token(secrets.token_bytes)
        # Every proof is answered with a fresh nonce challenge (a misbehaving server).
        self.always_demand_new_nonce = False
        # path -> response returned instead of handling the request.
        self.overrides: dict[str, httpx.Response] = {}
        self.transport = httpx.MockTransport(self.handle)

    # Inspection helpers

    def requests_to(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.request.url.path == path]

    @property
    def proofs(self) -> list[VerifiedDPoPProof]:
        return [s.proof for s in self.seen if s.proof is not None]

    def issued_secrets(self) -> list[str]:
        values: list[str] = []
        for attempt in self.attempts.values():
            values += [attempt.device_half, attempt.email_half]
        for session in self.sessions.values():
            values.append(session.refresh_token)
        values += list(self.access_tokens)
        return values

    # Dispatch

    def handle(self, request: httpx.Request) -> httpx.Response:
        seen = Seen(request)
        self.seen.append(seen)
        path = request.url.path
        if path in self.overrides:
            return self.overrides.pop(path)
        origin = f"{request.url.scheme}://{request.url.netloc.decode()}"
        if origin != self.issuer:
            return Refusal(404, "not_found", "unknown host").response()
        try:
            return self._route(request, seen)
        except Refusal as refusal:
            return refusal.response()

    def _route(self, request: httpx.Request, seen: Seen) -> httpx.Response:
        method, path = request.method, request.url.path
        if (method, path) == ("GET", "/.well-known/oauth-authorization-server"):
            return httpx.Response(200, json=self._metadata())
        if (method, path) == ("POST", "/v1/login/start"):
            return self._login_start(request, seen)
        if (method, path) == ("POST", "/oauth/token"):
            return self._token(request, seen)
        if (method, path) == ("GET", "/v1/me"):
            session = self._authorize(request, seen)
            return httpx.Response(
                200,
                json={
                    "user": {"email": session.email},
                    "session": {"id": session.id, "device_name": session.device_name},
                },
            )
        if (method, path) == ("GET", "/v1/sessions"):
            session = self._authorize(request, seen)
            mine = [s for s in self.sessions.values() if s.email == session.email and not s.ended]
            return httpx.Response(
                200,
                json={
                    "sessions": [
                        {"id": s.id, "device_name": s.device_name, "current": s is session}
                        for s in mine
                    ]
                },
            )
        if method == "DELETE" and path.startswith("/v1/sessions/"):
            session = self._authorize(request, seen)
            target = self.sessions.get(path.removeprefix("/v1/sessions/"))
            if target is None or target.email != session.email or target.ended:
                raise Refusal(404, "not_found", "no such session")
            self._end(target)
            return httpx.Response(204)
        if (method, path) == ("POST", "/v1/logout"):
            self._end(self._authorize(request, seen))
            return httpx.Response(204)
        if (method, path) == ("POST", "/v1/logout/all"):
            email = self._authorize(request, seen).email
            for session in self.sessions.values():
                if session.email == email:
                    self._end(session)
            return httpx.Response(204)
        raise Refusal(404, "not_found", f"no route for {method} {path}")

    def _metadata(self) -> dict[str, Any]:
        return {
            "issuer": self.metadata_issuer,
            "token_endpoint": f"{self.issuer}/oauth/token",
            "login_start_endpoint": f"{self.issuer}/v1/login/start",
            "revocation_endpoint": f"{self.issuer}/oauth/revoke",
            "introspection_endpoint": f"{self.issuer}/oauth/introspect",
            "jwks_uri": f"{self.issuer}/.well-known/jwks.json",
            "grant_types_supported": [MAGIC_LINK_GRANT, "refresh_token"],
            "dpop_signing_alg_values_supported": ["ES256", "EdDSA"],
        }

    # DPoP

    def _proof(
        self, request: httpx.Request, seen: Seen, *, access_token: str | None = None
    ) -> VerifiedDPoPProof:
        resource = access_token is not None
        status = 401 if resource else 400
        values = request.headers.get_list("DPoP")
        if len(values) != 1:
            raise Refusal(status, "invalid_dpop_proof", "exactly one DPoP header is required")
        try:
            proof = verify_dpop_proof(
                proof=values[0],
                method=request.method,
                url=str(request.url.copy_with(query=None, fragment=None)),
                now=self.clock(),
                max_age=60,
                max_future=5,
                access_token=access_token,
            )
        except InvalidDPoPProof as exc:
            raise Refusal(status, "invalid_dpop_proof", exc.description) from exc
        seen.proof = proof
        if proof.replay_key in self.replay_keys:
            raise Refusal(status, "invalid_dpop_proof", "proof replayed")
        self.replay_keys.add(proof.replay_key)
        if self.always_demand_new_nonce:
            self.nonce = "nonce-" + new_opaque_token(secrets.token_bytes)
        if self.require_nonce and (self.always_demand_new_nonce or proof.nonce != self.nonce):
            raise Refusal(
                status,
                "use_dpop_nonce",
                "a DPoP nonce is required",
                headers={"DPoP-Nonce": self.nonce},
                in_header=resource,
            )
        return proof

    def _authorize(self, request: httpx.Request, seen: Seen) -> Session:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme != "DPoP" or not token:
            raise Refusal(401, "invalid_token", "DPoP access token required", in_header=True)
        proof = self._proof(request, seen, access_token=token)
        entry = self.access_tokens.get(token)
        if entry is None:
            raise Refusal(401, "invalid_token", "unknown access token", in_header=True)
        session_id, expires_at = entry
        session = self.sessions[session_id]
        if session.ended or expires_at <= self.clock():
            raise Refusal(401, "invalid_token", "access token expired", in_header=True)
        if proof.jkt != session.jkt:
            raise Refusal(401, "invalid_token", "token bound to another key", in_header=True)
        return session

    # Endpoints

    def _login_start(self, request: httpx.Request, seen: Seen) -> httpx.Response:
        proof = self._proof(request, seen)
        body = json.loads(request.content)
        email = body.get("email")
        if not isinstance(email, str) or "@" not in email:
            raise Refusal(400, "invalid_email", "not an email address")
        login = new_login_secrets(secrets.token_bytes)
        self.attempts[login.attempt_id] = Attempt(
            email=email,
            device_half=login.device_half,
            email_half=login.email_half,
            jkt=proof.jkt,
            device_name=body.get("device_name"),
            expires_at=self.clock() + ATTEMPT_TTL,
        )
        self.outbox[email] = build_login_link(
            public_url=self.issuer, attempt_id=login.attempt_id, email_half=login.email_half
        )
        return httpx.Response(
            202,
            json={
                "attempt_id": login.attempt_id,
                "device_half": login.device_half,
                "expires_in": ATTEMPT_TTL,
            },
        )

    def _token(self, request: httpx.Request, seen: Seen) -> httpx.Response:
        proof = self._proof(request, seen)
        if request.headers.get("Content-Type") != "application/x-www-form-urlencoded":
            raise Refusal(415, "unsupported_media_type", "form body required")
        form = dict(parse_qsl(request.content.decode(), strict_parsing=True))
        grant_type = form.get("grant_type")
        if grant_type == MAGIC_LINK_GRANT:
            attempt = self.attempts.get(form.get("attempt_id", ""))
            if (
                attempt is None
                or attempt.used
                or attempt.expires_at <= self.clock()
                or attempt.device_half != form.get("device_half")
                or attempt.email_half != form.get("email_half")
                or attempt.jkt != proof.jkt
            ):
                raise Refusal(400, "invalid_grant", "the login cannot be completed")
            attempt.used = True
            session = Session(
                id=new_opaque_token(secrets.token_bytes)[:16],
                email=attempt.email,
                jkt=proof.jkt,
                device_name=attempt.device_name,
                refresh_token="",
            )
            self.sessions[session.id] = session
            return self._issue(session)
        if grant_type == "refresh_token":
            presented = form.get("refresh_token")
            for session in self.sessions.values():
                if (
                    not session.ended
                    and session.refresh_token == presented
                    and session.jkt == proof.jkt
                ):
                    return self._issue(session)
            raise Refusal(400, "invalid_grant", "refresh token not valid")
        raise Refusal(400, "unsupported_grant_type", "unknown grant type")

    def _issue(self, session: Session) -> httpx.Response:
        access_token = new_opaque_token(secrets.token_bytes)
        self.access_tokens[access_token] = (session.id, self.clock() + ACCESS_TOKEN_TTL)
        session.access_tokens.add(access_token)
        session.refresh_token = new_opaque_token(secrets.token_bytes)
        return httpx.Response(
            200,
            json={
                "access_token": access_token,
                "token_type": "DPoP",
                "expires_in": ACCESS_TOKEN_TTL,
                "refresh_token": session.refresh_token,
            },
            headers={"Cache-Control": "no-store"},
        )

    def _end(self, session: Session) -> None:
        session.ended = True


def sign_in(client: SplitlinkClient, server: FakeServer, email: str = "alice@example.com") -> None:
    """Start and complete a login with the link the fake server emailed."""
    client.start_login(email, "laptop")
    client.complete_login(server.outbox[email])
