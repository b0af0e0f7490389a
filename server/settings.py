"""The one settings object, read once from `SPLITLINK_*` environment variables (README §Settings).

Unknown or out-of-range values stop the process; nothing is silently repaired.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MINUTE = 60
HOUR = 60 * MINUTE
DAY = 24 * HOUR


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SPLITLINK_", frozen=True, extra="forbid")

    # Where clients reach the server. Issuer, endpoint URLs, DPoP htu and emailed links are built
    # from it alone, never from the Host or X-Forwarded-* headers (SPEC.md §4.3, attacks.md E1).
    public_url: str = "http://127.0.0.1:8000"
    database_url: str = "sqlite:///var/splitlink.db"
    data_dir: Path = Path("var")
    # Root secret (at least 32 bytes, base64url or any text of 43+ characters). HMAC keys and
    # encryption keys are derived from it. Without it, a development secret is kept in data_dir.
    secret_key: SecretStr | None = None

    app_name: str = Field("splitlink", min_length=1, max_length=64)
    client_id: str = Field("splitlink-app", min_length=1, max_length=128)
    audience: str | None = None
    signup_policy: Literal["open", "closed"] = "open"

    attempt_lifetime: int = Field(10 * MINUTE, ge=MINUTE, le=HOUR)
    max_failed_completions: int = Field(5, ge=1, le=20)
    access_token_lifetime: int = Field(10 * MINUTE, ge=MINUTE, le=HOUR)
    session_absolute_lifetime: int = Field(30 * DAY, ge=HOUR, le=365 * DAY)
    session_idle_timeout: int = Field(7 * DAY, ge=10 * MINUTE, le=90 * DAY)

    refresh_grace_period: int = Field(30, ge=0, le=300)
    # At most 60 s: `keys rotate` retires old keys access_token_lifetime + 60 s later, and every
    # worker must have switched to the new key before then.
    key_refresh_interval: float = Field(30.0, gt=0, le=60)

    dpop_max_age: int = Field(60, ge=5, le=300)
    dpop_max_future: int = Field(60, ge=0, le=300)
    # Server-provided DPoP nonces (RFC 9449 §8, §9): stateless, valid for this step and the last.
    use_dpop_nonce: bool = False
    dpop_nonce_step: int = Field(60, ge=10, le=600)

    # Resource servers allowed to call the introspection endpoint: {"client id": "secret"},
    # presented with HTTP Basic authentication (RFC 7662 §2.1).
    introspection_clients: dict[str, SecretStr] = Field(default_factory=dict)

    rate_limit_start_per_email: int = Field(5, ge=1)
    rate_limit_start_per_ip: int = Field(30, ge=1)
    rate_limit_complete_per_ip: int = Field(60, ge=1)
    rate_limit_window: int = Field(15 * MINUTE, ge=10, le=DAY)
    trusted_proxies: list[IPNetwork] = Field(default_factory=list)

    mail_from: str = "splitlink <no-reply@localhost>"
    dev_mailbox_console: bool = True
    outbox_poll_interval: float = Field(0.5, gt=0, le=60)
    housekeeping_interval: float = Field(60.0, gt=0, le=3600)

    # PostgreSQL: isolation level of write transactions, and connections per worker.
    database_isolation: Literal["read_committed", "serializable"] = "read_committed"
    database_pool_size: int = Field(10, ge=1, le=100)

    max_body_bytes: int = Field(16 * 1024, ge=1024, le=1024 * 1024)
    sqlite_busy_timeout: float = Field(5.0, gt=0, le=60)

    @field_validator("public_url")
    @classmethod
    def _public_url_is_an_origin(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("public_url must be an absolute http(s) URL")
        if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
            raise ValueError("public_url must be an origin: scheme, host and optional port only")
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        default_port = {"http": 80, "https": 443}[parts.scheme]
        port = "" if parts.port in (None, default_port) else f":{parts.port}"
        return f"{parts.scheme}://{host}{port}".lower()

    @property
    def issuer(self) -> str:
        return self.public_url

    @property
    def token_audience(self) -> str:
        return self.audience or self.public_url

    def endpoint(self, path: str) -> str:
        return self.public_url + path
