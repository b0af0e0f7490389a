"""Schemathesis hooks: real DPoP credentials for the operations under `/v1/`.

Loaded by the fuzzing test through `SCHEMATHESIS_HOOKS`. A fuzzer cannot sign, so without these
hooks every protected operation would stop at the credentials check. With them, each request
carries a DPoP-bound access token of a real session and a fresh proof for its own method and
path; schemathesis's `ignored_auth` check then sends the same request without them and expects a
refusal. A `401` (a fuzzed logout ends the session) signs in again.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import schemathesis

from server.login import GRANT_TYPE_MAGIC_LINK
from support.device import Device
from support.processes import mail_link


@dataclass(frozen=True)
class SignedIn:
    device: Device
    access_token: str


def _email_half(mail_dir: Path, attempt_id: str, timeout: float = 10.0) -> str:
    """The email half from the login mail of `attempt_id`, once the development mailbox has it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in mail_dir.glob("*.eml"):
            message = message_from_bytes(path.read_bytes(), _class=EmailMessage, policy=SMTP)
            link = mail_link(message)
            fragment = parse_qs(urlsplit(link).fragment) if link else {}
            if fragment.get("attempt_id") == [attempt_id]:
                return fragment["email_half"][0]
        time.sleep(0.05)
    raise RuntimeError(f"no login mail for {attempt_id} in {mail_dir}")


def sign_in(url: str, mail_dir: Path) -> SignedIn:
    device = Device("EdDSA", base_url=url, clock=lambda: int(time.time()))
    with httpx.Client(base_url=url, timeout=30) as http:
        started = http.post(
            "/v1/login/start",
            json={"email": "fuzz@example.com"},
            headers={"DPoP": device.proof("POST", "/v1/login/start")},
        )
        started.raise_for_status()
        attempt_id = started.json()["attempt_id"]
        completed = http.post(
            "/oauth2/token",
            data={
                "grant_type": GRANT_TYPE_MAGIC_LINK,
                "attempt_id": attempt_id,
                "device_half": started.json()["device_half"],
                "email_half": _email_half(mail_dir, attempt_id),
            },
            headers={"DPoP": device.proof("POST", "/oauth2/token")},
        )
        completed.raise_for_status()
    return SignedIn(device, completed.json()["access_token"])


def _per_operation(case: Any, context: Any) -> str:
    return f"{case.method} {case.path}"


# A session of its own for each operation: a fuzzed logout ends only the session it used.
@schemathesis.auth(cache_by_key=_per_operation).apply_to(path_regex="^/v1/(?!login/start$)")
class DPoPSession:
    def get(self, case: Any, context: Any) -> SignedIn:
        return sign_in(
            os.environ["SPLITLINK_FUZZ_URL"], Path(os.environ["SPLITLINK_FUZZ_MAIL_DIR"])
        )

    def set(self, case: Any, data: SignedIn, context: Any) -> None:
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"DPoP {data.access_token}"
        # A check that left out the proof on purpose keeps it left out.
        if "DPoP" in case.headers:
            case.headers["DPoP"] = data.device.proof(
                case.method.upper(), case.formatted_path, access_token=data.access_token
            )
