"""A device name is chosen by whoever starts a login, and mail clients turn text that looks like
a URL, a domain or an address into a link. No name may come out of the renderer as something
they would link, in the text part, the text of the HTML part or the subject, of the login mail
and of the new-device notice (SPEC.md §2.3, §6.1, §7.3). Ordinary names still read as written.
Nor may a recipient whose local part was chosen to read as a URL.

The hostile names are in data/hostile_device_names.json. Two detectors judge a rendered mail:
a conservative set of regular expressions (a scheme's colon, `//`, `www.`, `label.tld` with any
dot-like character, an `@` between words, IPv4, a phone number), and linkify-it, a real
autolinker. Each runs on the mail with the hostile name and on the same mail with a plain name;
whatever they find in the first must be exactly what they find in the second (the real link,
the recipient, the template's own "Device:" labels)."""

from __future__ import annotations

import html
import json
import re
import sys
import unicodedata
from collections import Counter
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import SMTP
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from linkify_it import LinkifyIt
from support.mail_harness import mail_server, start
from support.smtp_sink import SmtpSink

from protocol.email_address import parse_email_address
from protocol.link import parse_login_link
from server.app import build_mail_composer
from server.mail.compose import MailComposer
from server.mail.inert import inert_text
from server.mail.qr_image import qr_png
from server.settings import Settings

CORPUS: list[dict[str, str]] = json.loads(
    (Path(__file__).parent / "data" / "hostile_device_names.json").read_text(encoding="utf-8")
)
HOSTILE = [entry["name"] for entry in CORPUS]
HOSTILE_IDS = [entry["why"] for entry in CORPUS]
ORDINARY = [
    "Anna's iPhone",
    "Anna\u2019s iPhone",
    "Pixel 8 Pro",
    "iPhone 15 (2023)",
    "MacBook Pro 2023 16",
    "Galaxy S23 Ultra (work)",
    "Zo\u00eb's MacBook Air",
    "\U0001f4f1 phone \U0001f44d\U0001f3fd",
    "\u5f35\u5049\u7684\u624b\u6a5f",  # Chinese
    "\u30b9\u30de\u30fc\u30c8\u30d5\u30a9\u30f3",  # Japanese
    "\u0647\u0627\u062a\u0641 \u0623\u062d\u0645\u062f",  # Arabic
    "\u041d\u043e\u0443\u0442\u0431\u0443\u043a \u0421\u0430\u0448\u0438",  # Cyrillic
    "\u0915\u093f\u0930\u0923 \u0915\u093e \u092b\u093c\u094b\u0928",  # Devanagari, with marks
]
PLAIN = "Pixel"
LINK = "https://auth.example.test/l#attempt_id=AAAAAAAAAAAAAAAAAAAAAA&email_half=" + "B" * 43


# Separator -> the words of the names of punctuation and symbols that look like it.
_LOOKS_LIKE = {
    ".": "FULL STOP|DOTS?|POINT|LEADER",
    ":": "COLON|RATIO",
    "/": "SOLIDUS|SLASH|BACKSLASH",
    "@": "COMMERCIAL AT",
}


def _separator_classes() -> dict[str, str]:
    """For each separator, a regex class of itself, of every punctuation mark or symbol whose
    name says it looks like it, and of every character whose NFKC form holds it."""
    named = {sep: re.compile(rf"\b(?:{words})\b") for sep, words in _LOOKS_LIKE.items()}
    found = {sep: {sep} for sep in _LOOKS_LIKE}
    found["/"].add("\\")
    for code in range(sys.maxunicode + 1):
        char = chr(code)
        category = unicodedata.category(char)
        if category in ("Cn", "Cs", "Co"):
            continue
        name = unicodedata.name(char, "") if category[0] in "PS" else ""
        compatible = unicodedata.normalize("NFKC", char)
        for sep, chars in found.items():
            if sep in compatible or (sep == "/" and "\\" in compatible) or named[sep].search(name):
                chars.add(char)
    return {
        sep: "[" + "".join(re.escape(char) for char in sorted(chars)) + "]"
        for sep, chars in found.items()
    }


_CLASSES = _separator_classes()
DOT, COLON, SLASH, AT = _CLASSES["."], _CLASSES[":"], _CLASSES["/"], _CLASSES["@"]
# Each finds what some autolinker could take for a link, or its start.
LINK_LIKE = [
    re.compile(rf"[^\W\d_][\w+.\-]*{COLON}", re.IGNORECASE),  # a scheme: https:, mailto:, tel:
    re.compile(rf"{SLASH}{{2}}"),  # //host, and \\host that browsers read alike
    re.compile(rf"www\d{{0,3}}{DOT}", re.IGNORECASE),
    re.compile(rf"[\w\-]+(?:{DOT}[\w\-]+)+"),  # label.tld, with any dot
    re.compile(rf"[\w.+\-]+{AT}[\w\-]+(?:{DOT}[\w\-]+)*"),  # an address
    re.compile(rf"\d{{1,3}}(?:{DOT}\d{{1,3}}){{3}}"),  # IPv4
]
# A phone number, which phone mail apps make a tel: link: seven digits or more in one run.
NUMBER_RUN = re.compile(r"\d[\d \t\-()+./]*\d")
LINKIFY = LinkifyIt().tlds(["test", "example", "invalid"], True).set({"fuzzy_ip": True})


def link_like(text: str) -> Counter[str]:
    """Every link-like substring of `text`, of its NFKC form, as some clients read that, and of
    that form without format characters (zero-width and bidi controls), which others skip."""
    compatible = unicodedata.normalize("NFKC", text)
    visible = "".join(char for char in compatible if unicodedata.category(char) != "Cf")
    found: Counter[str] = Counter()
    for form in (text, compatible, visible):
        for pattern in LINK_LIKE:
            found.update(match.group() for match in pattern.finditer(form))
        found.update(
            run.group()
            for run in NUMBER_RUN.finditer(form)
            if sum(char.isdecimal() for char in run.group()) >= 7
        )
        found.update(f"linkify:{match.raw}" for match in LINKIFY.match(form) or [])
    return found


class _Text(HTMLParser):
    """The text of an HTML document, as a mail client shows it (what its autolinker sees)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def html_text(document: str) -> str:
    parser = _Text()
    parser.feed(document)
    parser.close()
    return "".join(parser.parts)


def shown(raw: bytes) -> dict[str, str]:
    """What a reader sees of a message: its subject, its text part, its HTML part's text."""
    message = message_from_bytes(raw, _class=EmailMessage, policy=SMTP)
    assert isinstance(message, EmailMessage)
    text = message.get_body(preferencelist=("plain",))
    document = message.get_body(preferencelist=("html",))
    assert text is not None and document is not None
    return {
        "subject": str(message["Subject"]),
        "text": str(text.get_content()),
        "html": html_text(str(document.get_content())),
        "html source": str(document.get_content()),
    }


def shown_text(raw: bytes) -> dict[str, str]:
    """What a reader sees of a text-only message: its subject and its text."""
    message = message_from_bytes(raw, _class=EmailMessage, policy=SMTP)
    assert isinstance(message, EmailMessage)
    return {"subject": str(message["Subject"]), "text": str(message.get_content())}


def _no_account(composer: MailComposer, recipient: str) -> bytes:
    return composer.no_account(
        recipient=recipient, message_id="<m3@auth.example.test>", requested_at=1_800_000_000
    )


def _composers(tmp_path: Path) -> list[MailComposer]:
    """The built-in templates, and templates that also put the name in each subject."""
    (tmp_path / "login_link.subject.txt").write_text("Sign in to $app_name from $device")
    (tmp_path / "new_device.subject.txt").write_text("New sign-in to $app_name: $device")
    return [
        build_mail_composer(Settings(app_name="Example", mail_from="Example <login@example.com>")),
        build_mail_composer(
            Settings(
                app_name="Example",
                mail_from="Example <login@example.com>",
                mail_templates_dir=tmp_path,
            )
        ),
    ]


def _mails(
    composer: MailComposer, device_name: str, *, recipient: str = "a@example.com"
) -> dict[str, bytes]:
    qr = qr_png(LINK)
    return {
        "login_link": composer.login_link(
            recipient=recipient,
            message_id="<m1@auth.example.test>",
            link=LINK,
            device_name=device_name,
            requested_at=1_800_000_000,
            expires_in_minutes=10,
            check_phrase="acid bake cable dance",
            qr_png=qr.png,
            qr_size=qr.width,
        ),
        "new_device": composer.new_device(
            recipient=recipient,
            message_id="<m2@auth.example.test>",
            device_name=device_name,
            key_alg="ES256",
            signed_in_at=1_800_000_042,
            session_id="C" * 22,
            check_phrase="acid bake cable dance",
        ),
    }


@pytest.fixture(scope="module")
def composers(tmp_path_factory: pytest.TempPathFactory) -> list[MailComposer]:
    return _composers(tmp_path_factory.mktemp("templates"))


@pytest.fixture(scope="module")
def plain_mails(composers: list[MailComposer]) -> list[dict[str, dict[str, str]]]:
    return [
        {kind: shown(raw) for kind, raw in _mails(composer, PLAIN).items()}
        for composer in composers
    ]


@pytest.mark.parametrize("name", HOSTILE, ids=HOSTILE_IDS)
def test_the_detectors_see_a_link_in_every_hostile_name(name: str) -> None:
    assert link_like(name)


@pytest.mark.parametrize("name", ORDINARY)
def test_the_detectors_see_no_link_in_an_ordinary_name(name: str) -> None:
    assert not link_like(name)


def test_the_detectors_see_the_links_a_mail_really_has(
    plain_mails: list[dict[str, dict[str, str]]],
) -> None:
    login = plain_mails[0]["login_link"]
    assert "auth.example.test" in link_like(login["text"])
    assert "a@example.com" in link_like(login["html"])


@pytest.mark.parametrize("name", HOSTILE, ids=HOSTILE_IDS)
def test_no_requester_chosen_name_becomes_a_link_in_a_mail(
    name: str,
    composers: list[MailComposer],
    plain_mails: list[dict[str, dict[str, str]]],
) -> None:
    for composer, plain in zip(composers, plain_mails, strict=True):
        for kind, raw in _mails(composer, name).items():
            for part, text in shown(raw).items():
                if part == "html source":
                    continue
                assert link_like(text) == link_like(plain[kind][part]), (kind, part)


@pytest.mark.parametrize("name", ORDINARY)
def test_an_ordinary_name_reads_as_written(name: str, composers: list[MailComposer]) -> None:
    for composer in composers:
        mails = {kind: shown(raw) for kind, raw in _mails(composer, name).items()}
        login, notice = mails["login_link"], mails["new_device"]
        assert f" from {name} at " in login["text"]
        assert f" from {name} at " in login["html"]
        assert f"<b>{html.escape(name)}</b>" in login["html source"]
        assert f"Device: {name}\r\n" in notice["text"]
        assert f"end \u201c{name}\u201d" in notice["html"]
        assert f'end "{name}"' in notice["text"]
    assert login["subject"] == f"Sign in to Example from {name}"
    assert notice["subject"] == f"New sign-in to Example: {name}"


def test_a_link_in_a_name_is_shown_with_spaces_for_its_separators(
    composers: list[MailComposer],
) -> None:
    mails = _mails(composers[0], "https://evil.test/l#attempt_id=x")
    assert " from https evil test l#attempt_id=x at " in shown(mails["login_link"])["text"]
    assert "Device: https evil test l#attempt_id=x\r\n" in shown(mails["new_device"])["text"]


def test_a_phone_number_in_a_name_is_shown_without_its_digits(
    composers: list[MailComposer],
) -> None:
    mails = _mails(composers[0], "Call +1 800 555 0100")
    assert " from Call +# ### ### #### at " in shown(mails["login_link"])["text"]


@settings(database=None, max_examples=500)
@given(st.text(max_size=80))
@example("https://evil.test/l#attempt_id=x")
@example("evil\u3002test \u2488 +1 (800) 555-0100 \u0301x\u200d")
def test_no_text_comes_out_with_a_separator_of_a_link(value: str) -> None:
    shown = inert_text(value)
    for char in shown:
        compatible = unicodedata.normalize("NFKC", char)
        assert not set(compatible) & set(".:/\\@\u3002"), char
        if not char.isascii():
            # No other punctuation (every Unicode dot is one), no control, format character,
            # mathematical sign or space but the ASCII one.
            assert unicodedata.category(char) not in ("Po", "Sm", "Zs", "Zl", "Zp", "Cc", "Cf")
    assert shown == " ".join(shown.split())
    assert not any(
        sum(char.isdecimal() for char in run.group()) >= 7 for run in NUMBER_RUN.finditer(shown)
    )
    assert inert_text(shown) == shown


@pytest.mark.parametrize("name", ["...", "://", "@", " \u3002 ", "\u2488"])
def test_a_name_with_nothing_left_to_show_reads_as_no_name(
    name: str, composers: list[MailComposer]
) -> None:
    mails = _mails(composers[0], name)
    assert " from a device at " in shown(mails["login_link"])["text"]
    assert "Device: a device without a name\r\n" in shown(mails["new_device"])["text"]


@pytest.mark.anyio
async def test_a_link_as_device_name_is_no_link_in_the_sent_mails(
    tmp_path: Path, sink: SmtpSink
) -> None:
    """Through the server: the name is accepted at start, stored as sent, and the login mail
    and the notice after the completion show it without a link."""
    name = "https://evil.test/l#attempt_id=x"
    async with mail_server(tmp_path, sink) as server:
        device = server.device()
        started = await start(server, device, "a@example.com", device_name=name)
        await server.deliver()
        (login,) = sink.deliveries
        link = next(
            word
            for word in login.text.split()
            if word.startswith(server.settings.public_url + "/l#")
        )
        completed = await server.complete(
            device,
            attempt_id=started["attempt_id"],
            device_half=started["device_half"],
            email_half=parse_login_link(link).email_half,
        )
        assert completed.status_code == 200
        me = await server.me(device, completed.json()["access_token"])
        assert me.json()["session"]["device_name"] == name  # kept as sent; only shown inert
        await server.deliver()
    (notice,) = [mail for mail in sink.deliveries if mail is not login]
    for mail in (login, notice):
        for text in (mail.text, html_text(mail.html), str(mail.message["Subject"])):
            assert not [found for found in link_like(text) if "evil" in found.lower()]


# Addresses that pass SPEC.md §5.1 and that a domain accepting every local part delivers: the
# requester chooses them whole.
URL_LIKE_ADDRESSES = [
    "evil.test/l#attempt_id=x@victim.example",
    "evil.test?l=1@victim.example",
    "www.evil.test/l@victim.example",
    "pay-pal.com/login@victim.example",
    "10.0.0.1/l@victim.example",
]


@pytest.mark.parametrize("address", URL_LIKE_ADDRESSES)
def test_a_recipient_chosen_to_look_like_a_link_is_no_link_in_the_mail(
    address: str, composers: list[MailComposer]
) -> None:
    assert parse_email_address(address).address == address  # accepted at start (SPEC.md §5.1)
    for composer in composers:
        plain = {kind: shown(raw) for kind, raw in _mails(composer, PLAIN).items()}
        plain["no_account"] = shown_text(_no_account(composer, "a@example.com"))
        mails = {
            kind: shown(raw) for kind, raw in _mails(composer, PLAIN, recipient=address).items()
        }
        mails["no_account"] = shown_text(_no_account(composer, address))
        for kind, parts in mails.items():
            for part, text in parts.items():
                if part != "html source":
                    assert not link_like(text) - link_like(plain[kind][part]), (kind, part)
            assert "this address" in parts["text"]


def test_an_ordinary_recipient_is_shown_as_it_is(composers: list[MailComposer]) -> None:
    address = "First.Last+news_2@example.com"
    mails = _mails(composers[0], PLAIN, recipient=address)
    assert f" as {address} from " in shown(mails["login_link"])["text"]
    assert f"account ({address})" in shown(mails["new_device"])["html"]
    assert f" as {address} at " in shown_text(_no_account(composers[0], address))["text"]
