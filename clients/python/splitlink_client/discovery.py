"""Authorization server metadata (RFC 8414), the only source of endpoint URLs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from protocol.dpop import normalize_htu
from protocol.errors import MalformedInput
from splitlink_client.errors import INVALID_RESPONSE, ClientError

WELL_KNOWN_PATH = "/.well-known/oauth-authorization-server"


@dataclass(frozen=True)
class ServerMetadata:
    issuer: str
    token_endpoint: str
    login_start_endpoint: str
    revocation_endpoint: str | None
    introspection_endpoint: str | None
    jwks_uri: str | None
    grant_types_supported: tuple[str, ...]
    dpop_signing_alg_values_supported: tuple[str, ...]

    def resource_url(self, path: str) -> str:
        """A resource under the issuer, such as `/v1/me`."""
        return self.issuer.rstrip("/") + path


def metadata_url(server_url: str) -> str:
    return server_url.rstrip("/") + WELL_KNOWN_PATH


def same_issuer(a: str, b: str) -> bool:
    try:
        return normalize_htu(a) == normalize_htu(b)
    except MalformedInput:
        return False


def parse_server_metadata(data: dict[str, Any], *, server_url: str) -> ServerMetadata:
    """Validate the metadata document; its issuer must be the server asked (RFC 8414 §3.3)."""
    issuer = _required_url(data, "issuer")
    if not same_issuer(issuer, server_url):
        raise ClientError(
            INVALID_RESPONSE,
            f"the server at {server_url} names its issuer {issuer!r}; "
            "use that URL as --server or SPLITLINK_SERVER (RFC 8414 §3.3 requires them to match)",
        )
    return ServerMetadata(
        issuer=issuer,
        token_endpoint=_required_url(data, "token_endpoint"),
        login_start_endpoint=_required_url(data, "login_start_endpoint"),
        revocation_endpoint=_optional_url(data, "revocation_endpoint"),
        introspection_endpoint=_optional_url(data, "introspection_endpoint"),
        jwks_uri=_optional_url(data, "jwks_uri"),
        grant_types_supported=_strings(data, "grant_types_supported"),
        dpop_signing_alg_values_supported=_strings(data, "dpop_signing_alg_values_supported"),
    )


def _required_url(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str):
        raise ClientError(INVALID_RESPONSE, f"server metadata {name} must be a URL string")
    try:
        normalize_htu(value)
    except MalformedInput as exc:
        message = f"server metadata {name} is not an http(s) URL"
        raise ClientError(INVALID_RESPONSE, message) from exc
    return value


def _optional_url(data: dict[str, Any], name: str) -> str | None:
    return None if data.get(name) is None else _required_url(data, name)


def _strings(data: dict[str, Any], name: str) -> tuple[str, ...]:
    value = data.get(name, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ClientError(INVALID_RESPONSE, f"server metadata {name} must be a list of strings")
    return tuple(value)
