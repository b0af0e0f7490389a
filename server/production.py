"""What `SPLITLINK_ENV=production` refuses and what it warns about (README "Operating
splitlink"). Each problem is one line naming the setting and the fix, and every problem is
reported at once, so that one restart is enough to correct them all.

`X-Forwarded-For` arriving while `trusted_proxies` is empty cannot be seen at startup: the
request log warns about it once per process (server/request_log.py).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from server.keyring import MIN_ROOT_SECRET_BYTES, decode_root_secret
from server.settings import Settings

# Base64url characters that hold MIN_ROOT_SECRET_BYTES bytes.
_MIN_SECRET_CHARACTERS = (MIN_ROOT_SECRET_BYTES * 8 + 5) // 6


class ProductionRefused(RuntimeError):
    """A production server or command refused to start; the message names every problem."""


def refuse_unsafe_production(settings: Settings) -> None:
    """Raise ProductionRefused when `settings` are production ones with problems: every entry
    point runs this, `uvicorn --factory` as much as `splitlink serve`."""
    problems = production_problems(settings) if settings.production else []
    if problems:
        raise ProductionRefused(
            "refusing to start in production (SPLITLINK_ENV=production):\n"
            + "\n".join(f"  - {problem}" for problem in problems)
        )


def production_problems(settings: Settings) -> list[str]:
    """Settings a production server must not start with; empty when there are none."""
    problems: list[str] = []
    if urlsplit(settings.public_url).scheme != "https":
        problems.append(
            f"SPLITLINK_PUBLIC_URL is {settings.public_url}: production needs an https:// "
            "URL, since login links and tokens travel in it"
        )
    required = (
        f"at least {MIN_ROOT_SECRET_BYTES} random bytes, base64url "
        f"({_MIN_SECRET_CHARACTERS}+ characters)"
    )
    if settings.secret_key is None:
        problems.append(
            f"SPLITLINK_SECRET_KEY is unset: production needs a root secret of {required}, "
            "the same on every host"
        )
    else:
        length = len(decode_root_secret(settings.secret_key.get_secret_value()))
        if length < MIN_ROOT_SECRET_BYTES:
            problems.append(
                f"SPLITLINK_SECRET_KEY holds {length} bytes: the root secret must hold {required}"
            )
    problems.extend(_mail_problems(settings))
    return problems


def production_warnings(settings: Settings) -> list[str]:
    """Settings a production server starts with, but that its operator should know about."""
    if settings.database_url.startswith("sqlite"):
        return [
            "the database is a SQLite file, which serves the processes of one host only; "
            "for more than one host set SPLITLINK_DATABASE_URL=postgresql://…"
        ]
    return []


def _mail_problems(settings: Settings) -> list[str]:
    try:
        target = settings.smtp
    except ValueError as exc:  # its message never repeats the value, which holds a password
        return [f"SPLITLINK_SMTP_URL: {exc}"]
    if target is None:
        return [
            "SPLITLINK_SMTP_URL is unset: the development mailbox delivers no mail; set an "
            "smtp:// (STARTTLS) or smtps:// URL of the mail provider"
        ]
    if target.security == "none" and not _is_loopback(target.host):
        return [
            f"SPLITLINK_SMTP_URL sends without TLS to {target.host}, which is not this host: "
            "anyone on the path reads every login link; use smtp:// (STARTTLS) or smtps://, "
            "or a relay on this host (127.0.0.1)"
        ]
    return []


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
