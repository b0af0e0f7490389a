"""`SplitlinkClient`: the device side of a splitlink sign-in, synchronous, over httpx.

Every request the client signs carries a fresh DPoP proof by the device key. When the server
answers `use_dpop_nonce` with a `DPoP-Nonce` header, the request is retried exactly once with a
proof carrying that nonce; the latest nonce the server sent goes into every later proof.
Secrets (halves, tokens, the private key) are written only to the state file and to the server.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from protocol.errors import ErrorCode, MalformedInput
from protocol.keys import Algorithm, SigningKey
from protocol.link import parse_login_link
from protocol.split_secret import parse_attempt_id, parse_half
from splitlink_client.discovery import (
    ServerMetadata,
    metadata_url,
    parse_server_metadata,
    same_issuer,
)
from splitlink_client.errors import INVALID_RESPONSE, ClientError, LocalError
from splitlink_client.proofs import Clock, ProofSigner, RandomBytes, system_clock, system_random
from splitlink_client.responses import (
    error_from_response,
    is_nonce_challenge,
    json_object,
    require_positive_int,
    require_string,
)
from splitlink_client.state import DeviceState, PendingLogin, TokenSet, load_state, save_state

MAGIC_LINK_GRANT = "urn:splitlink:params:oauth:grant-type:magic-link"
REFRESH_TOKEN_GRANT = "refresh_token"
DEFAULT_ALGORITHM: Algorithm = "EdDSA"
# An access token this close to expiry is refreshed before use.
REFRESH_LEEWAY_SECONDS = 30
DEFAULT_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class LoginStarted:
    email: str
    attempt_id: str
    expires_in: int
    alg: Algorithm
    key_created: bool


@dataclass(frozen=True)
class SignedIn:
    email: str
    expires_in: int


class SplitlinkClient:
    """One device talking to one splitlink server, its state kept in `state_path`.

    `http` is used as given (tests pass an `httpx.Client` over a `MockTransport`); without it the
    client makes and owns its own. Redirects are never followed: a proof names one URL.
    """

    def __init__(
        self,
        server_url: str,
        state_path: Path,
        *,
        http: httpx.Client | None = None,
        clock: Clock = system_clock,
        random_bytes: RandomBytes = system_random,
    ) -> None:
        self.server_url = server_url
        self.state_path = state_path
        self._owns_http = http is None
        self._http = http if http is not None else httpx.Client(timeout=DEFAULT_TIMEOUT_SECONDS)
        self._clock = clock
        self._random_bytes = random_bytes
        self._state: DeviceState | None = None
        self._metadata: ServerMetadata | None = None
        # RFC 9449 §8 and §9: the authorization server (start, token) and the resource server
        # (/v1) issue nonces independently; each is sent back only to the one that issued it.
        self._nonces: dict[str, str] = {}
        self._nonce: str | None = None

    def __repr__(self) -> str:
        return f"SplitlinkClient(server_url={self.server_url!r}, state_path={self.state_path!r})"

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> SplitlinkClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def state(self) -> DeviceState:
        """The device state, read from the state file on first use."""
        if self._state is None:
            self._state = load_state(self.state_path)
        return self._state

    @property
    def dpop_nonce(self) -> str | None:
        """The latest `DPoP-Nonce` the server sent, if any."""
        return self._nonce

    # Discovery

    def discover(self) -> ServerMetadata:
        """Fetch and validate the server metadata (RFC 8414), once per client."""
        if self._metadata is None:
            url = metadata_url(self.server_url)
            response = self._transmit("GET", url, headers={"Accept": "application/json"})
            if not response.is_success:
                raise error_from_response(response)
            self._metadata = parse_server_metadata(
                json_object(response), server_url=self.server_url
            )
        return self._metadata

    # Sign-in

    def start_login(
        self, email: str, device_name: str | None = None, *, alg: Algorithm | None = None
    ) -> LoginStarted:
        """Create the device key if there is none, then ask the server to email a link.

        `alg` chooses the algorithm of a new key; with an existing key it must match it.
        """
        state = self.state  # an unusable state file is refused before any request
        metadata = self.discover()
        key_created = False
        if state.key is None:
            state.key = SigningKey.generate(
                alg or DEFAULT_ALGORITHM, random_bytes=self._random_bytes
            )
            key_created = True
            self._save()
        elif alg is not None and alg != state.key.alg:
            raise LocalError(
                f"this device already has an {state.key.alg} key; "
                f"remove {self.state_path} to start over with {alg}"
            )
        key = state.key
        supported = metadata.dpop_signing_alg_values_supported
        if supported and key.alg not in supported:
            raise LocalError(
                f"the server does not accept {key.alg} proofs (it accepts {', '.join(supported)})"
            )
        body: dict[str, str] = {"email": email}
        if device_name is not None:
            body["device_name"] = device_name
        response = self._signed("POST", metadata.login_start_endpoint, key, json_body=body)
        data = json_object(response)
        try:
            attempt_id = parse_attempt_id(data.get("attempt_id"))
            device_half = parse_half(data.get("device_half"), field="device_half")
        except MalformedInput as exc:
            raise ClientError(
                INVALID_RESPONSE, exc.description, status=response.status_code
            ) from exc
        expires_in = require_positive_int(data, "expires_in", response)
        state.pending = PendingLogin(
            issuer=metadata.issuer,
            attempt_id=attempt_id,
            device_half=device_half,
            email=email,
            expires_at=self._clock() + expires_in,
        )
        self._save()
        return LoginStarted(
            email=email,
            attempt_id=attempt_id,
            expires_in=expires_in,
            alg=key.alg,
            key_created=key_created,
        )

    def complete_login(self, link: str) -> SignedIn:
        """Redeem the emailed link for tokens, with the pending attempt's device half.

        The link is checked against the pending attempt before any request is made.
        """
        pending = self.state.pending
        if pending is None:
            # SPEC.md §5.4: without the device half there is nothing to send.
            raise LocalError(
                "no login is pending on this device: the link belongs to another device or to "
                "an older login; run `login EMAIL` first"
            )
        try:
            parsed = parse_login_link(link)
        except MalformedInput as exc:
            raise LocalError(f"that is not a splitlink login link: {exc.description}") from exc
        if parsed.attempt_id != pending.attempt_id:
            raise LocalError(
                "the link belongs to another device, or to another login attempt than the one "
                "pending on this device; use the link from the latest email"
            )
        key = self._key()
        metadata = self.discover()
        if not same_issuer(metadata.issuer, pending.issuer):
            raise LocalError(
                f"the pending login was started at {pending.issuer}; complete it there with "
                f"--server {pending.issuer} (or SPLITLINK_SERVER)"
            )
        try:
            response = self._signed(
                "POST",
                metadata.token_endpoint,
                key,
                form={
                    "grant_type": MAGIC_LINK_GRANT,
                    "attempt_id": pending.attempt_id,
                    "device_half": pending.device_half,
                    "email_half": parsed.email_half,
                },
            )
        except ClientError as exc:
            # Consumed, locked or expired: the attempt can never be completed (with `consumed`,
            # an earlier completion's answer was lost). A generic refusal keeps it, since the
            # right link may still come.
            if exc.attempt_state is not None:
                self.state.pending = None
                self._save()
            raise
        tokens = self._token_set(response, metadata, previous_refresh_token=None)
        self.state.tokens = tokens
        self.state.pending = None
        self._save()
        return SignedIn(email=pending.email, expires_in=tokens.expires_at - self._clock())

    def refresh(self) -> int:
        """Exchange the refresh token for new tokens; returns the access token's lifetime.

        The server rotates refresh tokens, so the stored one is replaced. A refused refresh
        token (`invalid_grant`) is forgotten: the session is over.
        """
        self._require_signed_in()
        metadata = self.discover()
        tokens = self._tokens(metadata)
        try:
            response = self._signed(
                "POST",
                metadata.token_endpoint,
                self._key(),
                form={"grant_type": REFRESH_TOKEN_GRANT, "refresh_token": tokens.refresh_token},
            )
        except ClientError as exc:
            if exc.error == ErrorCode.INVALID_GRANT.value:
                self._forget_tokens()
            raise
        new_tokens = self._token_set(
            response, metadata, previous_refresh_token=tokens.refresh_token
        )
        self.state.tokens = new_tokens
        self._save()
        return new_tokens.expires_at - self._clock()

    # Resources

    def me(self) -> dict[str, Any]:
        """`GET {issuer}/v1/me`: the signed-in user and this session."""
        return json_object(self._authorized("GET", "/v1/me"))

    def sessions(self) -> dict[str, Any]:
        """`GET {issuer}/v1/sessions`: the user's sessions."""
        return json_object(self._authorized("GET", "/v1/sessions"))

    def end_session(self, session_id: str) -> None:
        """`DELETE {issuer}/v1/sessions/{id}`: end one of the user's sessions."""
        self._authorized("DELETE", "/v1/sessions/" + quote(session_id, safe=""))

    def logout(self) -> None:
        """End this session at the server, then forget its tokens."""
        self._end("/v1/logout")

    def logout_all(self) -> None:
        """End every session of the user, then forget this device's tokens."""
        self._end("/v1/logout/all")

    # Internals

    def _end(self, path: str) -> None:
        try:
            self._authorized("POST", path)
        except ClientError as exc:
            # 401: the server no longer accepts the token, so the session is already over.
            if exc.status == 401:
                self._forget_tokens()
            raise
        self._forget_tokens()

    def _save(self) -> None:
        save_state(self.state_path, self.state)

    def _forget_tokens(self) -> None:
        if self.state.tokens is not None:
            self.state.tokens = None
            self._save()

    def _key(self) -> SigningKey:
        key = self.state.key
        if key is None:
            raise LocalError("this device has no key yet; run `login EMAIL` first")
        return key

    def _require_signed_in(self) -> TokenSet:
        tokens = self.state.tokens
        if tokens is None:
            raise LocalError("not signed in; run `login EMAIL` first")
        return tokens

    def _tokens(self, metadata: ServerMetadata) -> TokenSet:
        tokens = self._require_signed_in()
        # Tokens go only to the server that issued them.
        if not same_issuer(tokens.issuer, metadata.issuer):
            raise LocalError(
                f"signed in at {tokens.issuer}, not at {metadata.issuer}; use --server "
                f"{tokens.issuer} (or SPLITLINK_SERVER), or sign in again here"
            )
        return tokens

    def _authorized(self, method: str, path: str) -> httpx.Response:
        self._require_signed_in()
        metadata = self.discover()
        tokens = self._tokens(metadata)
        if tokens.expires_at - REFRESH_LEEWAY_SECONDS <= self._clock():
            self.refresh()
            tokens = self._tokens(metadata)
        url = metadata.resource_url(path)
        return self._signed(method, url, self._key(), access_token=tokens.access_token)

    def _token_set(
        self,
        response: httpx.Response,
        metadata: ServerMetadata,
        *,
        previous_refresh_token: str | None,
    ) -> TokenSet:
        body = json_object(response)
        access_token = require_string(body, "access_token", response)
        token_type = require_string(body, "token_type", response)
        if token_type.lower() != "dpop":
            raise ClientError(
                INVALID_RESPONSE,
                "the server issued a token that is not DPoP-bound",
                status=response.status_code,
            )
        expires_in = require_positive_int(body, "expires_in", response)
        refresh_token = body.get("refresh_token")
        if refresh_token is None and previous_refresh_token is not None:
            # RFC 6749 §6: without a new refresh token, the old one stays valid.
            refresh_token = previous_refresh_token
        if not isinstance(refresh_token, str) or not refresh_token:
            raise ClientError(
                INVALID_RESPONSE, "the response lacks refresh_token", status=response.status_code
            )
        return TokenSet(
            issuer=metadata.issuer,
            access_token=access_token,
            refresh_token=refresh_token,
            expires_at=self._clock() + expires_in,
        )

    def _signed(
        self,
        method: str,
        url: str,
        key: SigningKey,
        *,
        access_token: str | None = None,
        form: dict[str, str] | None = None,
        json_body: dict[str, str] | None = None,
    ) -> httpx.Response:
        """Send with a fresh proof; on a nonce challenge, once more with the new nonce."""
        signer = ProofSigner(key, clock=self._clock, random_bytes=self._random_bytes)
        issuer = "resource" if access_token is not None else "authorization"

        def attempt() -> httpx.Response:
            nonce = self._nonces.get(issuer)
            headers = {
                "Accept": "application/json",
                "DPoP": signer.proof(method, url, access_token=access_token, nonce=nonce),
            }
            if access_token is not None:
                headers["Authorization"] = f"DPoP {access_token}"
            response = self._transmit(method, url, headers=headers, form=form, json_body=json_body)
            fresh = response.headers.get("DPoP-Nonce")
            if fresh:
                self._nonces[issuer] = fresh
                self._nonce = fresh
            return response

        response = attempt()
        if is_nonce_challenge(response):
            response = attempt()
        if not response.is_success:
            raise error_from_response(response)
        return response

    def _transmit(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str],
        form: dict[str, str] | None = None,
        json_body: dict[str, str] | None = None,
    ) -> httpx.Response:
        try:
            return self._http.request(
                method, url, headers=headers, data=form, json=json_body, follow_redirects=False
            )
        except httpx.HTTPError as exc:
            raise ClientError(
                ErrorCode.TEMPORARILY_UNAVAILABLE.value,
                f"{method} {url} failed: {type(exc).__name__}: {exc}",
            ) from exc
