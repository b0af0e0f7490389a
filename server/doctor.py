"""`splitlink doctor`: checks a deployment the way the server would meet it, and says for each
check what is fine or what to fix. It changes nothing and sends no mail."""

from __future__ import annotations

import contextlib
import ipaddress
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, Protocol
from urllib.parse import urlsplit

from server.keyring import Keyring, read_root_secret
from server.mail.mail_templates import MailTemplates
from server.mail.smtp import SmtpTransport
from server.mail.transport import MailServiceUnavailable
from server.settings import Settings
from server.signing_keys import load_key_set
from server.storage.database import Database, database_for
from server.storage.health import DatabaseHealth, missing_sqlite_file
from server.storage.migrate import head_revision, schema_revision
from server.storage.signing_keys import SigningKeyStore

Status = Literal["ok", "warn", "fail", "skip"]
# Beyond this, the clocks of hosts sharing the database disagree about expiry and windows.
CLOCK_SKEW_WARNING_SECONDS = 5.0


class DatabaseProbes(Protocol):
    """What the checks ask of the database itself."""

    @property
    def backend(self) -> str: ...

    async def reachable(self) -> None: ...

    async def clock(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Finding:
    check: str
    status: Status
    detail: str


def _configuration(settings: Settings) -> list[Finding]:
    found: list[Finding] = []
    try:
        smtp = settings.smtp
        MailTemplates.load(settings.mail_templates_dir)
    except Exception as exc:
        return [Finding("configuration", "fail", f"{exc}")]
    mail = f"SMTP {smtp.describe()}" if smtp is not None else "the development mailbox"
    found.append(
        Finding("configuration", "ok", f"public_url {settings.public_url}; mail to {mail}")
    )
    host = urlsplit(settings.public_url).hostname or ""
    if settings.public_url.startswith("http://") and not _is_loopback(host):
        found.append(
            Finding(
                "public_url",
                "warn",
                "not https: set SPLITLINK_PUBLIC_URL to an https origin in production",
            )
        )
    if settings.secret_key is None:
        found.append(
            Finding(
                "root secret",
                "warn",
                "SPLITLINK_SECRET_KEY is unset: the development secret in data_dir is used",
            )
        )
    return found


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _schema(db: Database) -> Finding:
    revision = await schema_revision(db)
    head = head_revision()
    if revision == head:
        return Finding("schema", "ok", f"at revision {head}")
    return Finding(
        "schema",
        "fail",
        f"at revision {revision or 'none'}, this server needs {head}: run `splitlink migrate` "
        "(a newer revision needs a newer server)",
    )


async def _signing_keys(db: Database, settings: Settings, *, now: int) -> Finding:
    try:
        root = read_root_secret(settings)
    except (ValueError, OSError) as exc:
        return Finding("signing keys", "fail", f"the root secret cannot be read: {exc}")
    if root is None:
        return Finding(
            "signing keys",
            "fail",
            "no root secret: set SPLITLINK_SECRET_KEY, or run `splitlink migrate` to create a "
            "development secret",
        )
    try:
        keys = await load_key_set(SigningKeyStore(db), Keyring.from_root(root), now=now)
    except Exception as exc:
        return Finding(
            "signing keys",
            "fail",
            f"{exc}; the root secret must be the one that sealed this database's keys",
        )
    return Finding(
        "signing keys",
        "ok",
        f"{len(keys.verification_keys)} open with the root secret; {keys.current.kid} signs",
    )


async def _smtp(settings: Settings) -> Finding:
    target = settings.smtp
    if target is None:
        return Finding("smtp", "skip", "not configured: mail goes to the development mailbox")
    transport = SmtpTransport(
        target,
        sender=settings.mail_envelope_sender,
        timeout=settings.smtp_timeout,
        ca_file=settings.smtp_tls_ca_file,
        local_hostname=urlsplit(settings.public_url).hostname or "localhost",
    )
    try:
        return Finding("smtp", "ok", await transport.probe())
    except MailServiceUnavailable as exc:
        return Finding(
            "smtp", "fail", f"{target.describe()}: {exc}; check smtp_url and the mail server"
        )


async def _clock(probes: DatabaseProbes) -> Finding:
    before = time.time()
    database_now = await probes.clock()
    after = time.time()
    skew = database_now - (before + after) / 2
    if abs(skew) > CLOCK_SKEW_WARNING_SECONDS:
        return Finding(
            "clock",
            "warn",
            f"this host's clock differs from the database's by {skew:+.1f} s: synchronise both "
            "(NTP)",
        )
    return Finding("clock", "ok", f"within {CLOCK_SKEW_WARNING_SECONDS:.0f} s of the database's")


async def examine(settings: Settings) -> list[Finding]:
    """Every check, in order; those that need the database are skipped when it is not there."""
    findings = _configuration(settings)
    findings.append(await _smtp(settings))
    db = database_for_check(settings)
    if isinstance(db, Finding):
        return [*findings, db, *_skipped("schema", "signing keys", "clock")]
    probes = DatabaseHealth(db)
    try:
        await db.connect()
        await probes.reachable()
    except Exception as exc:
        await _quietly(db.disconnect)
        detail = f"{type(exc).__name__}: {exc}".rstrip(": ")
        return [
            *findings,
            Finding("database", "fail", f"{detail}; check SPLITLINK_DATABASE_URL"),
            *_skipped("schema", "signing keys", "clock"),
        ]
    try:
        findings.append(Finding("database", "ok", f"{probes.backend} reachable"))
        schema = await _schema(db)
        findings.append(schema)
        if schema.status == "ok":
            findings.append(await _signing_keys(db, settings, now=int(time.time())))
        else:
            findings.extend(_skipped("signing keys"))
        findings.append(await _clock(probes))
    finally:
        await _quietly(db.disconnect)
    return findings


def database_for_check(settings: Settings) -> Database | Finding:
    """The database, unless it is a SQLite file that is not there: opening one would create it."""
    path = missing_sqlite_file(settings.database_url)
    if path is not None:
        return Finding(
            "database",
            "fail",
            f"no database file at {path}: run `splitlink migrate`, or set "
            "SPLITLINK_DATABASE_URL or SPLITLINK_DATA_DIR",
        )
    return database_for(settings)


def _skipped(*checks: str) -> list[Finding]:
    return [Finding(check, "skip", "needs the database") for check in checks]


async def _quietly(close: Callable[[], Awaitable[None]]) -> None:
    # The failure that matters has been reported already.
    with contextlib.suppress(Exception):
        await close()
