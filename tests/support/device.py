"""A test device: a key pair that makes DPoP proofs, with any header or claim overridable."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from protocol.dpop import DPOP_TYP, access_token_hash
from protocol.encoding import b64url_encode, compact_json
from protocol.keys import Algorithm, SigningKey

_UNSET: Any = object()


class Device:
    def __init__(
        self, alg: Algorithm = "EdDSA", *, base_url: str, clock: Callable[[], int]
    ) -> None:
        self.key = SigningKey.generate(alg, random_bytes=os.urandom)
        self.base_url = base_url
        self.clock = clock

    @property
    def jkt(self) -> str:
        return self.key.public.thumbprint

    def proof(
        self,
        method: str,
        path: str,
        *,
        access_token: str | None = None,
        header: dict[str, Any] | None = None,
        claims: dict[str, Any] | None = None,
        drop: tuple[str, ...] = (),
        sign_with: SigningKey | None = None,
        literals: dict[str, str] | None = None,
    ) -> str:
        """A proof for `method` on base_url + path; `header`/`claims` override, `drop` removes,
        `literals` sets claims to raw JSON text (numbers json.dumps cannot write, like 1e400)."""
        payload: dict[str, Any] = {
            "jti": b64url_encode(os.urandom(16)),
            "htm": method,
            "htu": self.base_url + path,
            "iat": self.clock(),
        }
        if access_token is not None:
            payload["ath"] = access_token_hash(access_token)
        payload.update(claims or {})
        head: dict[str, Any] = {
            "typ": DPOP_TYP,
            "alg": self.key.alg,
            "jwk": dict(self.key.public.jwk),
        }
        head.update(header or {})
        for name in drop:
            payload.pop(name, None)
            head.pop(name, None)
        for name in literals or {}:
            payload.pop(name, None)
        payload_json = compact_json(payload)
        if literals:
            members = ",".join(f'"{name}":{text}' for name, text in literals.items())
            payload_json = payload_json[:-1] + (b"," if payload else b"") + members.encode() + b"}"
        signing_input = b64url_encode(compact_json(head)) + "." + b64url_encode(payload_json)
        signer = sign_with or self.key
        return signing_input + "." + b64url_encode(signer.sign(signing_input.encode()))
