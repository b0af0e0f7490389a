"""Mail orders: what the outbox stores instead of a rendered message (docs/design.md §12.1).

A request that queues mail stores an order, a small versioned JSON document holding exactly the
values the composer needs. Everything that could change between two renderings (the Message-ID,
the time shown and put in the `Date` header) is fixed in the order when it is queued, and the
composer is deterministic, so the dispatcher renders the same bytes for every hand-off of a row.
Rendering (the QR code above all) costs CPU that the request need not spend; the request only
pays for a few hundred bytes of JSON.

The document is `{"v": 1, "kind": <kind>, <field>: <value>, ...}` with exactly the fields of the
kind's class below. Reading is strict: another version, an unknown kind, a missing or extra field
or a value of the wrong type is refused, never guessed at.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, get_type_hints

from protocol.encoding import parse_json_object
from protocol.errors import MalformedInput
from server.mail.compose import MailComposer
from server.mail.qr_image import qr_png

ORDER_VERSION = 1
_SEAL_CONTEXT = "outbox:"


class OrderError(ValueError):
    """An order that this server cannot read. The text names fields and kinds, never values:
    it ends up in logs and in `outbox_tries`."""


@dataclass(frozen=True)
class LoginLinkOrder:
    kind: ClassVar[str] = "login_link"
    recipient: str
    message_id: str
    # The link carries the email half: kept out of reprs, and so out of tracebacks and logs.
    link: str = field(repr=False)
    device_name: str | None
    requested_at: int
    expires_in_minutes: int
    check_phrase: str

    def render(self, composer: MailComposer) -> bytes:
        qr = qr_png(self.link)
        return composer.login_link(
            recipient=self.recipient,
            message_id=self.message_id,
            link=self.link,
            device_name=self.device_name,
            requested_at=self.requested_at,
            expires_in_minutes=self.expires_in_minutes,
            check_phrase=self.check_phrase,
            qr_png=qr.png,
            qr_size=qr.width,
        )


@dataclass(frozen=True)
class NoAccountOrder:
    kind: ClassVar[str] = "no_account"
    recipient: str
    message_id: str
    requested_at: int

    def render(self, composer: MailComposer) -> bytes:
        return composer.no_account(
            recipient=self.recipient,
            message_id=self.message_id,
            requested_at=self.requested_at,
        )


@dataclass(frozen=True)
class NewDeviceOrder:
    kind: ClassVar[str] = "new_device"
    recipient: str
    message_id: str
    device_name: str | None
    key_alg: str
    signed_in_at: int
    session_id: str
    check_phrase: str

    def render(self, composer: MailComposer) -> bytes:
        return composer.new_device(
            recipient=self.recipient,
            message_id=self.message_id,
            device_name=self.device_name,
            key_alg=self.key_alg,
            signed_in_at=self.signed_in_at,
            session_id=self.session_id,
            check_phrase=self.check_phrase,
        )


MailOrder = LoginLinkOrder | NoAccountOrder | NewDeviceOrder

_KINDS: dict[str, type[MailOrder]] = {
    cls.kind: cls for cls in (LoginLinkOrder, NoAccountOrder, NewDeviceOrder)
}


def _field_types(cls: type[MailOrder]) -> dict[str, Any]:
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


# Kind -> field name -> the type its value must have, from the annotations above.
_FIELD_TYPES = {kind: _field_types(cls) for kind, cls in _KINDS.items()}


def seal_context(outbox_id: str) -> str:
    """The associated data an order is sealed with: `outbox:<id>` binds it to its row, so a
    sealed order copied to another row does not open (SPEC.md §5.5)."""
    return _SEAL_CONTEXT + outbox_id


def encode_order(order: MailOrder) -> bytes:
    """Compact JSON. ASCII only, so any string that reached this point can be encoded."""
    document = {"v": ORDER_VERSION, "kind": order.kind, **asdict(order)}
    return json.dumps(document, separators=(",", ":")).encode("ascii")


def decode_order(data: bytes) -> MailOrder:
    try:
        # The rules of every JSON document the server reads (SPEC.md §3.2): one object, no
        # duplicate members, no NaN or Infinity.
        document = parse_json_object(data, field="the order")
    except MalformedInput as exc:
        raise OrderError(str(exc)) from exc
    version = document.pop("v", None)
    if type(version) is not int or version != ORDER_VERSION:
        shown = version if type(version) is int else "?"
        raise OrderError(f"unknown order version {shown}")
    kind = document.pop("kind", None)
    cls = _KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise OrderError("unknown order kind")
    types = _FIELD_TYPES[kind]
    if missing := types.keys() - document.keys():
        raise OrderError(f"{kind} order without {sorted(missing)}")
    if extra := document.keys() - types.keys():
        raise OrderError(f"{kind} order with unknown fields {sorted(extra)[:5]}")
    for name, value in document.items():
        # isinstance() takes a bool for an int: refused here, as JSON keeps them apart.
        if isinstance(value, bool) or not isinstance(value, types[name]):
            raise OrderError(f"{kind} order: {name} has the wrong type")
    return cls(**document)
