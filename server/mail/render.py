"""Rendering of outgoing mail (pure: everything it shows is an argument).

Messages are built with `email.message.EmailMessage` under the SMTP policy, which refuses CR and
LF in header values; every user-influenced value is validated before it gets here (SPEC.md §5).
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime


def _when(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _message(
    *, sender: str, recipient: str, subject: str, message_id: str, sent_at: int
) -> EmailMessage:
    message = EmailMessage(policy=SMTP)
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = subject
    message["Message-ID"] = message_id
    message["Date"] = format_datetime(datetime.fromtimestamp(sent_at, UTC))
    message["Auto-Submitted"] = "auto-generated"
    return message


def render_login_link_mail(
    *,
    app_name: str,
    sender: str,
    recipient: str,
    message_id: str,
    link: str,
    device_name: str | None,
    requested_at: int,
    expires_in_minutes: int,
) -> bytes:
    device = device_name or "a device"
    text = (
        f"Someone asked to sign in to {app_name} as {recipient} from {device} "
        f"at {_when(requested_at)}.\n\n"
        f"Open this link on that device to finish signing in:\n\n{link}\n\n"
        f"The link works only in the app that asked for it and expires in "
        f"{expires_in_minutes} minutes.\n\n"
        "If this wasn't you, ignore this email: nobody can sign in with it alone.\n"
    )
    body = (
        f"<p>Someone asked to sign in to {html.escape(app_name)} as {html.escape(recipient)} "
        f"from <b>{html.escape(device)}</b> at {_when(requested_at)}.</p>"
        f'<p><a href="{html.escape(link, quote=True)}">Finish signing in on that device</a></p>'
        f"<p>The link works only in the app that asked for it and expires in "
        f"{expires_in_minutes} minutes.</p>"
        "<p>If this wasn't you, ignore this email: nobody can sign in with it alone.</p>"
    )
    message = _message(
        sender=sender,
        recipient=recipient,
        subject=f"Sign in to {app_name}",
        message_id=message_id,
        sent_at=requested_at,
    )
    message.set_content(text)
    message.add_alternative(body, subtype="html")
    return message.as_bytes()


def render_no_account_mail(
    *, app_name: str, sender: str, recipient: str, message_id: str, requested_at: int
) -> bytes:
    text = (
        f"Someone asked to sign in to {app_name} as {recipient} at {_when(requested_at)}, "
        f"but no {app_name} account uses this address, and new accounts cannot be created "
        "by signing in.\n\nIf this wasn't you, ignore this email.\n"
    )
    message = _message(
        sender=sender,
        recipient=recipient,
        subject=f"Sign-in request for {app_name}",
        message_id=message_id,
        sent_at=requested_at,
    )
    message.set_content(text)
    return message.as_bytes()
