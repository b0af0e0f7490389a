"""The same message built with the `email.mime` classes and written by `BytesGenerator`: what
`server.mail.render.write_message` must equal, byte for byte."""

from __future__ import annotations

from email.charset import QP, Charset
from email.generator import BytesGenerator
from email.message import Message
from email.mime.image import MIMEImage
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
from io import BytesIO

from server.mail.render import (
    _POLICY,
    Headers,
    ImagePart,
    MimePart,
    TextPart,
)

# UTF-8 text bodies in quoted-printable, as `write_message` writes them.
_UTF8_QP = Charset("utf-8")
_UTF8_QP.body_encoding = QP


def _library_part(part: MimePart) -> Message:
    built: Message
    if isinstance(part, TextPart):
        built = MIMENonMultipart("text", part.subtype, policy=_POLICY)
        built.set_payload(part.text, _UTF8_QP)  # charset="utf-8", quoted-printable
    elif isinstance(part, ImagePart):
        built = MIMEImage(part.png, "png", policy=_POLICY)
        built.add_header("Content-Disposition", "inline", filename=part.filename)
        built["Content-ID"] = f"<{part.content_id}>"
    else:
        params = {} if part.root_type is None else {"type": part.root_type}
        built = MIMEMultipart(part.subtype, boundary=part.boundary, policy=_POLICY, **params)
        for child in part.parts:
            inner = _library_part(child)
            del inner["MIME-Version"]  # a part's header never holds it (RFC 2045 §4)
            built.attach(inner)
    return built


def library_bytes(headers: Headers, body: MimePart) -> bytes:
    message: Message = Message(policy=_POLICY)
    for name, value in headers:
        message[name] = value
    content = _library_part(body)
    for name, value in content.raw_items():
        if name != "MIME-Version":
            message[name] = value
    message.set_payload(content.get_payload())
    out = BytesIO()
    BytesGenerator(out, mangle_from_=False, policy=_POLICY).flatten(message)
    return out.getvalue()
