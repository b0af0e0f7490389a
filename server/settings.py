"""The one settings object, read once from `SPLITLINK_*` environment variables (README §Settings).

Unknown or out-of-range values stop the process; nothing is silently repaired.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from protocol.dpop import normalize_htu
from protocol.errors import MalformedInput
from server.mail.smtp import SmtpTarget, envelope_sender, parse_smtp_url

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MINUTE = 60
HOUR = 60 * MINUTE
DAY = 24 * HOUR
AUDIT_RETENTION_DAYS = 90

LogLevel = Literal["critical", "error", "warning", "info", "debug"]
LogFormat = Literal["json", "text"]

# The default of metrics_allowed_networks.
_LOOPBACK: tuple[IPNetwork, ...] = (
    ipaddress.IPv4Network("127.0.0.0/8"),
    ipaddress.IPv6Network("::1/128"),
)

# The default database: a SQLite file in data_dir.
DATABASE_FILE = "splitlink.db"

_SCHEME = re.compile(r"[a-z][a-z0-9+.-]{1,63}")
_APPLE_APP_ID = re.compile(r"[A-Z0-9]{10}\.[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*")
_FINGERPRINT = re.compile(r"[0-9A-F]{2}(:[0-9A-F]{2}){31}")
# App link schemes that would not open an app, or that a browser treats specially.
_RESERVED_SCHEMES = frozenset(
    {"about", "blob", "content", "data", "file", "ftp", "http", "https", "intent", "javascript"}
    | {"mailto", "sms", "tel", "vbscript", "ws", "wss"}
)


class AndroidApp(BaseModel):
    """One entry of `android_apps`: an app allowed to open `{public_url}/l` (Android App Links)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    package_name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)+$")
    # SHA-256 of the signing certificate, as `keytool -list` prints it: 32 hex pairs, colons.
    sha256_cert_fingerprints: list[str] = Field(min_length=1)

    @field_validator("sha256_cert_fingerprints")
    @classmethod
    def _fingerprints(cls, values: list[str]) -> list[str]:
        result = [value.upper() for value in values]
        for value in result:
            parts = value.split(":")
            if len(parts) != 32 or any(len(p) != 2 or p.strip("0123456789ABCDEF") for p in parts):
                raise ValueError("a fingerprint is 32 hex pairs separated by colons")
        return result


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SPLITLINK_", frozen=True, extra="forbid")

    # Where clients reach the server. Issuer, endpoint URLs, DPoP htu and emailed links are built
    # from it alone, never from the Host or X-Forwarded-* headers (SPEC.md §4.3, threats.md E1).
    public_url: str = "http://127.0.0.1:8000"
    # Unset, the SQLite file splitlink.db in data_dir (see _database_in_data_dir).
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
    # Per-process caches of the resource path (docs/design.md §9): entries, least recently used out.
    # Full, they take about 0.6 KB per token and 1.5 KB (Ed25519) to 2.2 KB (P-256) per key.
    verified_token_cache_size: int = Field(4096, ge=0, le=1_000_000)
    device_key_cache_size: int = Field(4096, ge=0, le=1_000_000)

    # Resource servers allowed to call the introspection endpoint: {"client id": "secret"},
    # presented with HTTP Basic authentication (RFC 7662 §2.1).
    introspection_clients: dict[str, SecretStr] = Field(default_factory=dict)

    @field_validator("introspection_clients")
    @classmethod
    def _introspection_secrets_are_strong(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for client_id, secret in value.items():
            if not client_id or len(secret.get_secret_value()) < 16:
                raise ValueError("each introspection client needs an id and a 16+ character secret")
        return value

    # Starts for one address per window (SPEC.md §6.11): from one client, with one key, and in
    # all, where the last bounds the mail sent to the address. Keep the first below the last,
    # or one client alone can use up an address's starts. A key that holds a live session of
    # the address's account is bound only by its own bucket and `rate_limit_start_per_ip`.
    rate_limit_start_per_email_client: int = Field(3, ge=1)
    rate_limit_start_per_email_key: int = Field(3, ge=1)
    rate_limit_start_per_email: int = Field(10, ge=1)
    rate_limit_start_per_ip: int = Field(30, ge=1)
    # Starts per window from one network (`rate_limit_ipv6_network_prefix`): the most starts,
    # and so the most mail, one subscriber's allocation causes, however many clients it spans.
    rate_limit_start_per_network: int = Field(120, ge=1)
    rate_limit_complete_per_ip: int = Field(60, ge=1)
    rate_limit_window: int = Field(15 * MINUTE, ge=10, le=DAY)
    trusted_proxies: list[IPNetwork] = Field(default_factory=list)
    # The per-IP limits count an IPv6 client by its network of this many bits: one holder of a
    # /64 can use any address in it.
    rate_limit_ipv6_prefix: int = Field(64, ge=32, le=128)
    # The network of an IPv6 client: a subscriber is commonly given a /56 or a /48, many /64s,
    # so `start-net` and `start-email-client` count this wider prefix. It holds the client.
    rate_limit_ipv6_network_prefix: int = Field(48, ge=16, le=64)
    # Clients allowed to read /metrics (README "Metrics"); others get a 404. Loopback alone by
    # default: a security server's counts are not public. Empty: no one.
    metrics_allowed_networks: list[IPNetwork] = Field(default_factory=lambda: list(_LOOPBACK))

    mail_from: str = "splitlink <no-reply@localhost>"
    dev_mailbox_console: bool = True
    outbox_poll_interval: float = Field(0.5, gt=0, le=60)
    # Messages each process hands off at once (docs/design.md §12.2).
    outbox_concurrency: int = Field(4, ge=1, le=64)
    housekeeping_interval: float = Field(60.0, gt=0, le=3600)
    # /readyz fails its `outbox` check while a message has been due for longer than this.
    outbox_stuck_after: int = Field(10 * MINUTE, ge=MINUTE, le=DAY)
    # Rows of the audit trail older than this are deleted by housekeeping (docs/design.md §6).
    audit_retention_days: int = Field(AUDIT_RETENTION_DAYS, ge=1, le=3650)

    # --- Mail delivery, the landing page and app links (SPEC.md §6.10, §7; README "Mail") -----
    # Where mail goes. Unset: the development mailbox (data_dir/mail and the console).
    #   smtp://user:password@host:587    STARTTLS required: nothing is sent if it is not offered
    #   smtps://user:password@host:465   TLS from the first byte
    #   smtp+insecure://host:25          no TLS and no credentials: a relay on this host or a
    #                                    private network only, since anyone on the path reads
    #                                    the login links
    # User and password are percent-decoded. The whole value is secret (it holds the password),
    # so it is checked when the application is built (`smtp`), where an error cannot echo it.
    smtp_url: SecretStr | None = None
    # Connect timeout, and the longest wait for each SMTP reply, in seconds.
    smtp_timeout: float = Field(10.0, gt=0, le=30)
    # CA certificates (PEM) to trust for the SMTP server instead of the system's.
    smtp_tls_ca_file: Path | None = None
    # A directory whose files replace built-in mail templates of the same name.
    mail_templates_dir: Path | None = None
    # The app's own URL scheme ("myapp"): the landing page then offers "Open the app"
    # (myapp://login), which opens the app and carries no secret.
    app_link_scheme: str | None = None
    # Universal links (iOS): app IDs "TEAMID.bundle.id" for apple-app-site-association.
    apple_app_ids: list[str] = Field(default_factory=list)
    # App Links (Android): [{"package_name": ..., "sha256_cert_fingerprints": [...]}].
    android_apps: list[AndroidApp] = Field(default_factory=list)

    @field_validator("smtp_tls_ca_file")
    @classmethod
    def _ca_file_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError("smtp_tls_ca_file must name a readable file")
        return value

    @field_validator("mail_from")
    @classmethod
    def _mail_from_holds_one_address(cls, value: str) -> str:
        envelope_sender(value)
        return value

    @field_validator("app_link_scheme")
    @classmethod
    def _app_link_scheme(cls, value: str | None) -> str | None:
        if value is None:
            return None
        scheme = value.lower()
        if not _SCHEME.fullmatch(scheme):
            raise ValueError("app_link_scheme must be a URL scheme such as myapp")
        if scheme in _RESERVED_SCHEMES:
            raise ValueError(f"app_link_scheme cannot be {scheme}")
        return scheme

    @field_validator("apple_app_ids")
    @classmethod
    def _apple_app_ids(cls, values: list[str]) -> list[str]:
        for value in values:
            if not _APPLE_APP_ID.fullmatch(value):
                raise ValueError("an Apple app ID is TEAMID.bundle.id (a 10-character team ID)")
        return values

    @property
    def smtp(self) -> SmtpTarget | None:
        """The parsed `smtp_url`; ValueError (without the value) if it is malformed."""
        return None if self.smtp_url is None else parse_smtp_url(self.smtp_url.get_secret_value())

    @property
    def mail_envelope_sender(self) -> str:
        return envelope_sender(self.mail_from)

    # --- end of mail settings -------------------------------------------------------------------

    # PostgreSQL: isolation level of write transactions, and connections per worker.
    database_isolation: Literal["read_committed", "serializable"] = "read_committed"
    database_pool_size: int = Field(10, ge=1, le=100)

    max_body_bytes: int = Field(16 * 1024, ge=1024, le=1024 * 1024)
    # Against slow and idle clients (uvicorn's own limits, per worker; README "Operating
    # splitlink" says what the proxy in front must add): seconds an idle keep-alive connection
    # is kept, and connections plus requests at once before new ones are answered 503.
    http_keep_alive_timeout: int = Field(5, ge=1, le=300)
    http_concurrency_limit: int = Field(1000, ge=10, le=100_000)
    # On SIGTERM: seconds for requests in flight, then for mail hand-offs, to finish.
    shutdown_timeout: int = Field(30, ge=1, le=600)
    # `production` refuses to start on settings that are only fit for a developer's machine
    # (server/production.py) and makes the log JSON by default.
    env: Literal["development", "production"] = "development"
    # Level of the server's log (`splitlink serve`): its own lines and uvicorn's.
    log_level: LogLevel = "info"
    # One JSON object a line, or readable text; unset, JSON in production and text otherwise.
    log_format: LogFormat | None = None
    sqlite_busy_timeout: float = Field(5.0, gt=0, le=60)
    # Web apps served from these origins may call the server from a browser (CORS). Empty: no
    # CORS header is ever sent, and browsers keep other origins out.
    cors_origins: list[str] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _database_in_data_dir(cls, values: Any) -> Any:
        """Without a database_url, the database lives beside the secret and the mailbox, so
        that setting data_dir alone moves all three."""
        if not isinstance(values, dict) or values.get("database_url") is not None:
            return values
        data_dir = Path(values.get("data_dir", cls.model_fields["data_dir"].default))
        return {**values, "database_url": f"sqlite:///{data_dir / DATABASE_FILE}"}

    @model_validator(mode="after")
    def _ipv6_network_holds_the_client(self) -> Settings:
        if self.rate_limit_ipv6_network_prefix > self.rate_limit_ipv6_prefix:
            raise ValueError(
                "rate_limit_ipv6_network_prefix cannot be longer than rate_limit_ipv6_prefix: "
                "a network holds whole clients"
            )
        return self

    @field_validator("cors_origins")
    @classmethod
    def _cors_origins_are_origins(cls, values: list[str]) -> list[str]:
        return [_origin(value, name="a CORS origin") for value in values]

    @field_validator("public_url")
    @classmethod
    def _public_url_is_an_origin(cls, value: str) -> str:
        return _origin(value, name="public_url")

    @property
    def production(self) -> bool:
        return self.env == "production"

    @property
    def effective_log_format(self) -> LogFormat:
        if self.log_format is not None:
            return self.log_format
        return "json" if self.production else "text"

    @property
    def issuer(self) -> str:
        return self.public_url

    @property
    def token_audience(self) -> str:
        return self.audience or self.public_url

    def endpoint(self, path: str) -> str:
        return self.public_url + path


def _origin(value: str, *, name: str) -> str:
    """An http(s) origin, lower-cased, without a default port: as browsers send `Origin`."""
    # Refused as an htu would be, so that urlsplit cannot quietly drop a TAB or a newline.
    try:
        normalize_htu(value)
    except MalformedInput as exc:
        raise ValueError(f"{name}: {exc.description}") from exc
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{name} must be an absolute http(s) URL")
    if (
        parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username is not None
        or parts.password is not None
    ):
        raise ValueError(f"{name} must be an origin: scheme, host and optional port only")
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    default_port = {"http": 80, "https": 443}[parts.scheme]
    port = "" if parts.port in (None, default_port) else f":{parts.port}"
    return f"{parts.scheme}://{host}{port}".lower()


# Variables with the prefix that belong to the reference client and to the test suite.
_NOT_SERVER_SETTINGS = frozenset(
    {"SPLITLINK_SERVER", "SPLITLINK_CLIENT_STATE", "SPLITLINK_TEST_POSTGRES_URL"}
)


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """SPLITLINK_* variables that name no setting: a typo would otherwise be ignored silently
    and leave a default (a permissive one, perhaps) in force."""
    known = {"SPLITLINK_" + name.upper() for name in Settings.model_fields}
    return sorted(
        name
        for name in environ
        # Names are matched without regard to case, as the settings themselves are read.
        if name.upper().startswith("SPLITLINK_")
        and name.upper() not in known | _NOT_SERVER_SETTINGS
    )


def settings_from_environment(environ: Mapping[str, str]) -> Settings:
    """The settings of a server process; refuses unknown SPLITLINK_* variables."""
    unknown = unknown_variables(environ)
    if unknown:
        raise ValueError("unknown settings in the environment: " + ", ".join(unknown))
    return Settings()
