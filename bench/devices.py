"""Device keys, DPoP proofs made ahead of time, and the email halves read from the dev mailbox."""

from __future__ import annotations

import os
import quopri
import re
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from protocol.dpop import create_dpop_proof
from protocol.encoding import b64url_encode
from protocol.keys import Algorithm, SigningKey

_LINK = re.compile(r"attempt_id=([A-Za-z0-9_-]+)&email_half=([A-Za-z0-9_-]+)")


def new_key(alg: Algorithm) -> SigningKey:
    return SigningKey.generate(alg, random_bytes=os.urandom)


def proof(
    key: SigningKey, method: str, url: str, *, access_token: str | None = None, iat: int = 0
) -> str:
    return create_dpop_proof(
        key=key,
        method=method,
        url=url,
        iat=iat or int(time.time()),
        jti=b64url_encode(os.urandom(16)),
        access_token=access_token,
    )


def _proof_batch(args: tuple[dict[str, str], str, str, str | None, int, int]) -> list[str]:
    jwk, method, url, access_token, iat, count = args
    key = SigningKey.from_private_jwk(jwk)
    return [proof(key, method, url, access_token=access_token, iat=iat) for _ in range(count)]


def proof_pool(
    key: SigningKey,
    method: str,
    url: str,
    count: int,
    *,
    access_token: str | None = None,
    iat: int,
    processes: int = 2,
) -> list[str]:
    """`count` proofs with unique `jti`s and the given `iat`, made on `processes` cores."""
    if count <= 4000 or processes <= 1:
        return _proof_batch((key.private_jwk(), method, url, access_token, iat, count))
    share = -(-count // processes)
    jobs = [
        (key.private_jwk(), method, url, access_token, iat, min(share, count - i * share))
        for i in range(processes)
    ]
    with ProcessPoolExecutor(processes) as pool:
        return [p for batch in pool.map(_proof_batch, jobs) for p in batch]


def _login_link(raw: bytes) -> tuple[str, str] | None:
    """The link of a login mail: its text part is quoted-printable, and decoding the whole file
    as such (the base64 of the QR code passes through) is a tenth of the cost of parsing the
    MIME structure, which mattered because this process shares the machine with the server."""
    match = _LINK.search(quopri.decodestring(raw).decode("ascii", "replace"))
    return None if match is None else (match.group(1), match.group(2))


# Login links already read from files that nobody was waiting for yet: file name -> link.
_READ: dict[str, tuple[str, str]] = {}


def read_email_halves(mail_dir: Path, wanted: Iterable[str], *, timeout: float) -> dict[str, str]:
    """attempt id -> email half, from the dev mailbox's .eml files, waiting for all of `wanted`.

    Files are deleted once used, and mail of other kinds once complete, so that a long run
    neither fills the directory nor reads a file twice."""
    missing = set(wanted)
    found: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while missing:
        progressed = False
        for path in sorted(mail_dir.glob("*.eml")) if mail_dir.exists() else []:
            link = _READ.get(path.name)
            if link is None:
                try:
                    raw = path.read_bytes()
                except FileNotFoundError:
                    continue
                link = _login_link(raw)
                if link is None:
                    # The dev mailbox renames a message into place once it is whole: this is
                    # another kind of mail (a new-device notice).
                    path.unlink(missing_ok=True)
                    continue
                _READ[path.name] = link
            attempt_id, half = link
            if attempt_id in missing:
                found[attempt_id] = half
                missing.discard(attempt_id)
                path.unlink(missing_ok=True)
                del _READ[path.name]
                progressed = True
        if missing and not progressed:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(missing)} login mails did not arrive in {timeout} s")
            time.sleep(0.05)
    return found
