"""`sign_in`: a whole login against a server in development, the link read from its mail.

This is what a person does with the phone, done by a test: start the login, take the link from
the mail the server sent, complete it with the same device key.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from protocol.keys import Algorithm
from splitlink_client.client import SplitlinkClient
from splitlink_client.login_mail import (
    DEFAULT_MAIL_TIMEOUT_SECONDS,
    LoginMailbox,
    wait_for_login_mail,
)


def sign_in(
    *,
    server_url: str,
    email: str,
    mailbox: LoginMailbox,
    state_path: Path,
    device_name: str | None = None,
    alg: Algorithm | None = None,
    timeout: float = DEFAULT_MAIL_TIMEOUT_SECONDS,
    http: httpx.Client | None = None,
) -> SplitlinkClient:
    """A client signed in as `email`, its key and tokens in `state_path`, ready for
    authenticated calls (`me()`, `sessions()`, `refresh()`, `logout()`). The caller closes it.

    Raises `ClientError` when the server refuses a step, and `MailNotReceived` when no mail for
    the attempt reaches `mailbox` within `timeout` seconds.
    """
    client = SplitlinkClient(server_url, state_path, http=http)
    try:
        started = client.start_login(email, device_name, alg=alg)
        mail = wait_for_login_mail(mailbox, attempt_id=started.attempt_id, timeout=timeout)
        client.complete_login(mail.link)
    except BaseException:
        client.close()
        raise
    return client
