"""The emailed login link (SPEC.md §5.4).

The email half travels in the URL fragment: browsers, mail scanners and proxies never send a
fragment to a server, so the half never reaches a request line, an access log or a Referer.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from protocol.errors import MalformedInput
from protocol.split_secret import parse_attempt_id, parse_half

LOGIN_LINK_PATH = "/l"


@dataclass(frozen=True)
class LoginLink:
    attempt_id: str
    email_half: str

    def __repr__(self) -> str:
        return f"LoginLink(attempt_id={self.attempt_id!r}, email_half=...)"


def build_login_link(*, public_url: str, attempt_id: str, email_half: str) -> str:
    return (
        f"{public_url.rstrip('/')}{LOGIN_LINK_PATH}#attempt_id={attempt_id}&email_half={email_half}"
    )


def parse_login_link(link: str) -> LoginLink:
    """Read the attempt id and email half from a link's fragment (what the app does).

    Other names are ignored, so that a later link may carry more; no name may repeat.
    """
    fragment = urlsplit(link.strip()).fragment
    try:
        pairs = parse_qsl(fragment, keep_blank_values=True, strict_parsing=True)
    except ValueError as exc:
        raise MalformedInput("the link has no login fragment") from exc
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name in fields:
            raise MalformedInput(f"the link repeats {name}")
        fields[name] = value
    return LoginLink(
        attempt_id=parse_attempt_id(fields.get("attempt_id")),
        email_half=parse_half(fields.get("email_half"), field="email_half"),
    )
