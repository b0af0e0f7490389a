"""Schemathesis against a real server process, from the OpenAPI document it serves.

Quick in `make test`; `make fuzz` sets SPLITLINK_FUZZ_EXAMPLES much higher. Checks: no server
error, every status, content type, header and body as documented, invalid input refused, and
every protected operation refusing a request without its credentials (`ignored_auth`; the
hooks in support/fuzz_auth.py sign the others). Left out: `positive_data_acceptance`, because a
schema cannot express a signature: a generated `DPoP` header matches the document and is still
no proof.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from support.processes import BIN, ROOT, running_server_process

_EXAMPLES = os.environ.get("SPLITLINK_FUZZ_EXAMPLES", "8")
# No stateful phase in the quick run: the document has no links between operations to follow.
_PHASES = os.environ.get("SPLITLINK_FUZZ_PHASES", "coverage,fuzzing")
# Fuzzing starts many logins from one address and one client: the limits are not under test.
_GENEROUS_LIMITS = {
    "SPLITLINK_RATE_LIMIT_START_PER_EMAIL": "100000",
    "SPLITLINK_RATE_LIMIT_START_PER_EMAIL_CLIENT": "100000",
    "SPLITLINK_RATE_LIMIT_START_PER_EMAIL_KEY": "100000",
    "SPLITLINK_RATE_LIMIT_START_PER_IP": "100000",
    "SPLITLINK_RATE_LIMIT_COMPLETE_PER_IP": "100000",
}


@pytest.mark.slow
@pytest.mark.timeout(int(os.environ.get("SPLITLINK_FUZZ_TIMEOUT", "300")))
def test_the_running_server_answers_as_its_openapi_document_says(tmp_path: Path) -> None:
    with running_server_process(tmp_path, workers=1, extra_env=_GENEROUS_LIMITS) as server:
        env = {
            **server.env,
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
            "SCHEMATHESIS_HOOKS": "support.fuzz_auth",
            "SPLITLINK_FUZZ_URL": server.url,
            "SPLITLINK_FUZZ_MAIL_DIR": str(server.mail_dir),
        }
        result = subprocess.run(
            [
                str(BIN / "schemathesis"),
                "run",
                f"{server.url}/openapi.json",
                "--checks=all",
                "--exclude-checks=positive_data_acceptance",
                f"--max-examples={_EXAMPLES}",
                f"--phases={_PHASES}",
                "--max-redirects=0",
                "--no-color",
            ],
            env=env,
            cwd=tmp_path,  # its cache goes there, not into the checkout
            capture_output=True,
            text=True,
            check=False,
        )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "passed" in result.stdout
