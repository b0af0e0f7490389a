"""How the messages are written (SPEC.md §7.3; docs/design.md §13.1): the MIME structure of each
kind, 7-bit lines of bounded length with CRLF endings, RFC 2047 for text that is not ASCII, no
header injection (threats.md D6), and boundaries that no body can contain."""

from __future__ import annotations

import hashlib
import html
import re
from email import message_from_bytes
from email.message import EmailMessage, Message
from email.policy import SMTP
from pathlib import Path
from string import Template
from typing import Protocol

import pytest

from server.app import build_mail_composer
from server.mail.compose import MailComposer, qr_content_id, utc_time
from server.mail.header_values import HeaderError
from server.mail.inert import inert_text
from server.mail.mail_templates import MailTemplates, TemplateError
from server.mail.qr_image import qr_png
from server.settings import Settings

LINK = "https://auth.example.test/l#attempt_id=AAAAAAAAAAAAAAAAAAAAAA&email_half=" + "B" * 43
HOSTILE = '"><a href=//evil>x</a> Zo\u00eb\u2019s phone =?utf-8?q?x?= =_0.'
UNICODE_APP = "Zo\u00eb\u2019s Caf\u00e9 \u2014 \u65e5\u672c\u8a9e"
REQUESTED_AT = 1_800_000_000


class Render(Protocol):
    def __call__(
        self,
        composer: MailComposer,
        *,
        recipient: str = ...,
        message_id: str = ...,
        device_name: str | None = ...,
    ) -> bytes: ...


def _login_link(
    composer: MailComposer,
    *,
    recipient: str = "a@example.com",
    message_id: str = "<m1@auth.example.test>",
    device_name: str | None = HOSTILE,
) -> bytes:
    qr = qr_png(LINK)
    return composer.login_link(
        recipient=recipient,
        message_id=message_id,
        link=LINK,
        device_name=device_name,
        requested_at=REQUESTED_AT,
        expires_in_minutes=10,
        check_phrase="acid bake cable dance",
        qr_png=qr.png,
        qr_size=qr.width,
    )


def _no_account(
    composer: MailComposer,
    *,
    recipient: str = "a@example.com",
    message_id: str = "<m2@auth.example.test>",
    device_name: str | None = None,  # not shown in this kind
) -> bytes:
    return composer.no_account(
        recipient=recipient, message_id=message_id, requested_at=REQUESTED_AT
    )


def _new_device(
    composer: MailComposer,
    *,
    recipient: str = "a@example.com",
    message_id: str = "<m3@auth.example.test>",
    device_name: str | None = HOSTILE,
) -> bytes:
    return composer.new_device(
        recipient=recipient,
        message_id=message_id,
        device_name=device_name,
        key_alg="ES256",
        signed_in_at=REQUESTED_AT + 42,
        session_id="C" * 22,
        check_phrase="acid bake cable dance",
    )


KINDS: dict[str, Render] = {
    "login_link": _login_link,
    "no_account": _no_account,
    "new_device": _new_device,
}


def _composer(
    templates_dir: Path | None = None,
    *,
    app_name: str = "splitlink",
    mail_from: str = "splitlink <no-reply@localhost>",
) -> MailComposer:
    return build_mail_composer(
        Settings(app_name=app_name, mail_from=mail_from, mail_templates_dir=templates_dir)
    )


def _parse(raw: bytes) -> EmailMessage:
    parsed = message_from_bytes(raw, _class=EmailMessage, policy=SMTP)
    assert isinstance(parsed, EmailMessage)
    return parsed


def _header_lines(raw: bytes) -> list[bytes]:
    return raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")


def _shape(part: Message) -> object:
    """The content types of a message and its parts, nested as they are."""
    if part.is_multipart():
        return (part.get_content_type(), [_shape(sub) for sub in part.get_payload()])
    return part.get_content_type()


def _all_mails(tmp_path: Path) -> list[bytes]:
    """Every kind, with the built-in templates and with long subjects in and out of ASCII, a
    display name that is not ASCII, and device names with and without hostile text."""
    (tmp_path / "login_link.subject.txt").write_text(
        "Sign in to $app_name from $device: " + "a-very-long-word-" * 8 + " and more " * 12
    )
    (tmp_path / "new_device.subject.txt").write_text("New sign-in to $app_name " * 6)
    (tmp_path / "no_account.subject.txt").write_text("x" * 300)
    composers = [
        _composer(),
        _composer(tmp_path, app_name=UNICODE_APP, mail_from=f"{UNICODE_APP} <login@example.com>"),
    ]
    return [
        render(composer, device_name=device)
        for composer in composers
        for render in KINDS.values()
        for device in (None, HOSTILE, "\u00e9" * 64)
    ]


def test_each_kind_has_its_mime_structure_and_headers() -> None:
    composer = _composer()
    login = _parse(_login_link(composer))
    assert _shape(login) == (
        "multipart/alternative",
        ["text/plain", ("multipart/related", ["text/html", "image/png"])],
    )
    _, related = login.get_payload()
    assert related.get_param("type") == "text/html"
    _, image = related.get_payload()
    assert image["Content-ID"] == f"<{qr_content_id('<m1@auth.example.test>')}>"
    assert image.get_content_disposition() == "inline"
    assert image.get_filename() == "sign-in-code.png"
    assert image["Content-Transfer-Encoding"] == "base64"
    assert image.get_content() == qr_png(LINK).png
    assert _shape(_parse(_new_device(composer))) == (
        "multipart/alternative",
        ["text/plain", "text/html"],
    )
    assert _shape(_parse(_no_account(composer))) == "text/plain"
    for kind, render in KINDS.items():
        message = _parse(render(composer))
        names = [name for name, _ in message.items()]
        assert names[:7] == [
            "From",
            "To",
            "Subject",
            "Message-ID",
            "Date",
            "Auto-Submitted",
            "MIME-Version",
        ], kind
        assert message["From"] == "splitlink <no-reply@localhost>"
        assert message["To"] == "a@example.com"
        assert message["Auto-Submitted"] == "auto-generated"
        assert message["MIME-Version"] == "1.0"
        for part in message.walk():
            if part is not message:
                assert part["MIME-Version"] is None  # the message's header only (RFC 2045 §4)
            if part.get_content_maintype() == "text":
                assert part.get_content_charset() == "utf-8"
                assert part["Content-Transfer-Encoding"] == "quoted-printable"


def test_every_line_of_every_mail_is_7bit_and_at_most_998_octets(tmp_path: Path) -> None:
    for raw in _all_mails(tmp_path):
        assert raw.isascii()
        assert raw.endswith(b"\r\n")
        lines = raw.split(b"\r\n")
        # CRLF only: no bare CR or LF anywhere.
        assert not any(b"\r" in line or b"\n" in line for line in lines)
        assert max(len(line) for line in lines) <= 998
        # And the recommended 78 too: headers are folded, bodies are quoted-printable or base64.
        assert max(len(line) for line in lines) <= 78


def test_long_subjects_are_folded_and_read_back_unchanged(tmp_path: Path) -> None:
    subjects = [
        "Sign in " + "word " * 40,  # folds at its spaces
        "Sign in " + "x" * 77 + " end",  # the longest word that fits a continuation line
        "Sign in " + "x" * 78,  # one more: encoded words, which fold anywhere
        "Sign in " + "x" * 1200,  # would not fit even the 998 of RFC 5322 §2.1.1 unfolded
        "Sign in, " + "now; " * 30,
        "\u00e9" * 400,
    ]
    for subject in subjects:
        (tmp_path / "no_account.subject.txt").write_text(subject)
        raw = _no_account(_composer(tmp_path))
        lines = _header_lines(raw)
        assert max(len(line) for line in lines) <= 78
        assert _parse(raw)["Subject"] == " ".join(subject.split())


def test_non_ascii_subject_is_rfc2047_encoded() -> None:
    composer = _composer(app_name=UNICODE_APP)
    for render, subject in [
        (_login_link, f"Sign in to {UNICODE_APP}"),
        (_no_account, f"Sign-in request for {UNICODE_APP}"),
        (_new_device, f"New sign-in to {UNICODE_APP}"),
    ]:
        raw = render(composer)
        lines = _header_lines(raw)
        start = next(i for i, line in enumerate(lines) if line.startswith(b"Subject:"))
        assert lines[start].startswith(b"Subject: =?utf-8?q?")
        for line in lines[start + 1 :]:
            if not line.startswith(b" "):
                break
            assert line.startswith(b" =?utf-8?q?")
        assert _parse(raw)["Subject"] == subject


def test_ascii_text_that_looks_like_an_encoded_word_is_shown_as_written(tmp_path: Path) -> None:
    (tmp_path / "login_link.subject.txt").write_text("Sign in from $device")
    raw = _login_link(_composer(tmp_path), device_name="=?utf-8?q?Bank?=")
    assert _parse(raw)["Subject"] == "Sign in from =?utf-8?q?Bank?="


def test_a_device_name_of_encoded_words_cannot_show_a_domain_in_a_subject(tmp_path: Path) -> None:
    # "=2E" is a dot in an encoded word: a reader that decoded the name would show "evil.test",
    # which no inert name may hold (SPEC.md §7.3).
    name = "=?utf-8?q?evil=2Etest?= =?utf-8?b?ZXZpbC50ZXN0?="
    (tmp_path / "login_link.subject.txt").write_text("Sign in from $device")
    (tmp_path / "new_device.subject.txt").write_text("New sign-in from $device")
    composer = _composer(tmp_path)
    for render, subject in [(_login_link, "Sign in from"), (_new_device, "New sign-in from")]:
        shown = _parse(render(composer, device_name=name))["Subject"]
        assert shown == f"{subject} {name}"
        assert "evil.test" not in shown


def test_non_ascii_display_name_in_mail_from_is_rfc2047_encoded() -> None:
    for mail_from in [
        "Zo\u00eb Example <login@example.com>",
        f"{UNICODE_APP * 3} <login@example.com>",
        '"Example, Inc." <login@example.com>',
        "login@example.com",
    ]:
        raw = _no_account(_composer(mail_from=mail_from))
        lines = _header_lines(raw)
        to = next(i for i, line in enumerate(lines) if line.startswith(b"To:"))
        from_lines = lines[:to]
        assert all(len(line) <= 78 for line in from_lines)
        if not mail_from.isascii():
            assert from_lines[0].startswith(b"From: =?utf-8?")
            assert from_lines[-1].endswith(b" <login@example.com>")
        # Compared with runs of spaces as one: where the encoded words of a long name are
        # split at a space, the standard library's parser shows the folding space as well.
        assert " ".join(_parse(raw)["From"].split()) == " ".join(mail_from.split())


@pytest.mark.parametrize("bad", ["\r\n", "\r", "\n", "\x00", "\x0b", "\x1b", "\x85", "\u2028"])
def test_header_values_with_line_breaks_are_refused(tmp_path: Path, bad: str) -> None:
    injected = f"{bad}Bcc: victim@example.net"
    composer = _composer()
    # At render time: a recipient or Message-ID from an altered order.
    for render in KINDS.values():
        with pytest.raises(HeaderError, match=r"^To: "):
            render(composer, recipient=f"a@example.com{injected}")
        # (the Content-ID of the QR code is made from the Message-ID, and checked first)
        with pytest.raises(HeaderError, match=r"^(Message-ID|Content-ID): "):
            render(composer, message_id=f"<m@example.test>{injected}")
    # At render time: a subject, however its text came to hold the character.
    templates = MailTemplates.load()
    broken = MailTemplates(
        {**templates.templates, "no_account.subject.txt": Template(f"Sign in to $app_name{bad}x")}
    )
    composer = MailComposer(app_name="Example", sender="a@example.com", templates=broken)
    if bad.isspace():  # line breaks and other white space become single spaces
        assert _parse(_no_account(composer))["Subject"] == "Sign in to Example x"
    else:
        with pytest.raises(HeaderError, match=r"^Subject: "):
            _no_account(composer)
    # When the server starts: an app name shown in every subject, and mail_from.
    with pytest.raises(HeaderError, match=r"^app_name: "):
        _composer(app_name=f"Example{injected}")
    with pytest.raises(HeaderError, match=r"^From: "):
        MailComposer(app_name="Example", sender=f"a@example.com{injected}", templates=templates)
    # When the templates are loaded: a subject template. Its line breaks and other white space
    # become single spaces (so the subject stays one line); any other control is refused.
    (tmp_path / "no_account.subject.txt").write_text(f"Sign in to $app_name{bad}x")
    if bad.isspace():
        assert _parse(_no_account(_composer(tmp_path)))["Subject"] == "Sign in to splitlink x"
    else:
        with pytest.raises(TemplateError, match="control character"):
            MailTemplates.load(tmp_path)


def test_a_refused_header_value_names_the_header_never_the_value() -> None:
    secret = "a@example.com\r\nBcc: victim@example.net"
    with pytest.raises(HeaderError) as caught:
        _no_account(_composer(), recipient=secret)
    assert "victim" not in str(caught.value)


@pytest.mark.parametrize("kind", ["login_link", "new_device"])
def test_a_boundary_never_occurs_in_a_body(tmp_path: Path, kind: str) -> None:
    # A template line and the device name hold the very delimiters of their message (known
    # here from the Message-ID): quoted-printable writes "=" as "=3D", so no body line can be
    # one. (A device name is shown without its dots, SPEC.md §7.3; the template keeps them.)
    message_id = "<m9@auth.example.test>"
    digest = hashlib.sha256(message_id.encode()).hexdigest()[:32]
    device = f"--=_0.{digest} --=_1.{digest}--"
    (tmp_path / "login_link.txt").write_text(f"{device}\n$device\n$link\n")
    (tmp_path / "new_device.txt").write_text(f"{device}\n$device\n$signed_in_at\n")
    raw = KINDS[kind](_composer(tmp_path), message_id=message_id, device_name=device)
    boundaries = re.findall(rb'boundary="([^"]+)"', raw)
    assert boundaries == [f"=_{n}.{digest}".encode() for n in range(len(boundaries))]
    # Each multipart has its opening, middle and closing delimiter, and no line else is one.
    delimiters = [line for line in raw.split(b"\r\n") if line.startswith(b"--=_")]
    assert len(delimiters) == 3 * len(boundaries) == {"login_link": 6, "new_device": 3}[kind]
    message = _parse(raw)
    assert not message.defects
    text = message.get_body(preferencelist=("plain",))
    assert text is not None and text.get_content().startswith(device + "\r\n")


def test_a_body_line_starting_with_from_is_kept_as_written(tmp_path: Path) -> None:
    # compat32's generators would write ">From " for mbox; this one must not.
    (tmp_path / "no_account.txt").write_text("From $app_name:\nFrom here on, nothing.\n")
    message = _parse(_no_account(_composer(tmp_path)))
    assert message.get_content() == "From splitlink:\r\nFrom here on, nothing.\r\n"


def test_every_text_reads_back_as_its_template_wrote_it(tmp_path: Path) -> None:
    # Text that quoted-printable treats specially: CRLF and CR line ends, trailing white space,
    # lines longer than 76, "=" and "From " at a line's start, no final newline. Each part reads
    # back as written, its line ends as CRLF and a final one added, and is 7-bit in lines of
    # at most 76 characters (RFC 2045 §6.7).
    body = "From $app_name\r\n=?x?= \t\r" + "y" * 200 + " \n\u00e9" * 80 + "\n\n  \nend $link"
    (tmp_path / "login_link.txt").write_text(body, newline="")
    (tmp_path / "login_link.html").write_text(body + " <img src='$qr_src'>", newline="")
    (tmp_path / "new_device.txt").write_text("$device $signed_in_at \n\n", newline="")
    (tmp_path / "new_device.html").write_text("$device$signed_in_at", newline="")
    composer = _composer(tmp_path)
    device = inert_text(HOSTILE)
    signed_in = utc_time(REQUESTED_AT + 42)
    expected = {
        "login_link": [
            body.replace("$app_name", "splitlink").replace("$link", LINK),
            body.replace("$app_name", "splitlink").replace("$link", html.escape(LINK))
            + " <img src='cid:qr.m1@auth.example.test'>",
        ],
        "new_device": [
            f"{device} {signed_in} \n\n",
            f"{html.escape(device)}{signed_in}",
        ],
    }
    for kind in ("login_link", "new_device"):
        raw = KINDS[kind](composer)
        texts = [part for part in _parse(raw).walk() if part.get_content_maintype() == "text"]
        assert [part["Content-Transfer-Encoding"] for part in texts] == ["quoted-printable"] * 2
        assert [part.get_content() for part in texts] == [
            _with_crlf(text) for text in expected[kind]
        ], kind
        assert raw.isascii()
        assert max(len(line) for line in raw.split(b"\r\n")) <= 76


def _with_crlf(text: str) -> str:
    lines = re.sub(r"\r\n|\r|\n", "\r\n", text)
    return lines if lines.endswith("\r\n") else lines + "\r\n"
