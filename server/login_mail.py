"""The mail a login queues, as sealed orders for the outbox (SPEC.md §7.1): the start's link or
"no account" notice, and the completion's new-device notice. Nothing is rendered here; the
dispatcher renders each order (docs/design.md §12.1)."""

from __future__ import annotations

from server.clock import RandomBytes
from server.keyring import Keyring
from server.mail import outbox
from server.mail.orders import LoginLinkOrder, MailOrder, NewDeviceOrder, NoAccountOrder
from server.storage.records import SealedMail


class LoginMail:
    def __init__(self, *, keyring: Keyring, random_bytes: RandomBytes, domain: str) -> None:
        self._keyring = keyring
        self._random = random_bytes
        self._domain = domain

    def start_mail(
        self,
        *,
        recipient: str,
        attempt_id: str,
        signup_allowed: bool,
        link: str,
        device_name: str | None,
        requested_at: int,
        expires_in_minutes: int,
        check_phrase: str,
    ) -> SealedMail:
        """The login link with sign-up allowed, else the "no account" notice. Either order is
        a few hundred bytes of JSON, sealed: the same work whether or not the address has an
        account."""
        mail = outbox.new_queued_mail(random_bytes=self._random, domain=self._domain)
        order: MailOrder
        if signup_allowed:
            order = LoginLinkOrder(
                recipient=recipient,
                message_id=mail.message_id,
                link=link,
                device_name=device_name,
                requested_at=requested_at,
                expires_in_minutes=expires_in_minutes,
                check_phrase=check_phrase,
            )
        else:
            order = NoAccountOrder(
                recipient=recipient, message_id=mail.message_id, requested_at=requested_at
            )
        return outbox.seal_mail(
            mail,
            order,
            attempt_id=attempt_id if signup_allowed else None,
            keyring=self._keyring,
            random_bytes=self._random,
        )

    def new_device_notice(
        self,
        *,
        recipient: str,
        session_id: str,
        device_name: str | None,
        key_alg: str,
        signed_in_at: int,
        check_phrase: str,
    ) -> SealedMail:
        """The notice of a new session, to the account's stored address."""
        notice = outbox.new_queued_mail(random_bytes=self._random, domain=self._domain)
        return outbox.seal_mail(
            notice,
            NewDeviceOrder(
                recipient=recipient,
                message_id=notice.message_id,
                device_name=device_name,
                key_alg=key_alg,
                signed_in_at=signed_in_at,
                session_id=session_id,
                check_phrase=check_phrase,
            ),
            attempt_id=None,
            keyring=self._keyring,
            random_bytes=self._random,
        )
