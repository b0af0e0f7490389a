"""Measurement 1: GET /v1/me throughput against a bare endpoint and the one-verification ceilings.

Every app runs alone, with one uvicorn worker and the same uvicorn settings (bench/serve.py), and
receives byte-for-byte the same kind of request from wrk: `Authorization: DPoP <token>` and a
`DPoP` proof. For the splitlink server every proof is used once (unique `jti`, fresh `iat`,
`ath` of the token); the pool is sized from a calibration run so that it is not exhausted.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx

from bench import deploy, procs, wrk
from bench.devices import new_key, proof, proof_pool, read_email_halves
from protocol.keys import Algorithm, SigningKey

GRANT_MAGIC_LINK = "urn:splitlink:params:oauth:grant-type:magic-link"


def login(server: procs.Server, key: SigningKey, mail_dir: Path, email: str) -> dict[str, str]:
    """A complete login over HTTP (setup, not measured)."""
    public = server.env["SPLITLINK_PUBLIC_URL"]
    with httpx.Client(base_url=server.url, timeout=30) as client:
        started = client.post(
            "/v1/login/start",
            json={"email": email, "device_name": "bench"},
            headers={"DPoP": proof(key, "POST", public + "/v1/login/start")},
        )
        started.raise_for_status()
        attempt_id = started.json()["attempt_id"]
        half = read_email_halves(mail_dir, [attempt_id], timeout=30)[attempt_id]
        done = client.post(
            "/oauth2/token",
            data={
                "grant_type": GRANT_MAGIC_LINK,
                "attempt_id": attempt_id,
                "device_half": started.json()["device_half"],
                "email_half": half,
            },
            headers={"DPoP": proof(key, "POST", public + "/oauth2/token")},
        )
        done.raise_for_status()
        tokens: dict[str, str] = done.json()
        return tokens


def write_pool(path: Path, access_token: str, proofs: list[str]) -> Path:
    path.write_text(access_token + "\n" + "\n".join(proofs) + "\n")
    return path


def measure_splitlink(
    server: procs.Server,
    key: SigningKey,
    access_token: str,
    workdir: Path,
    *,
    seconds: float,
    warmup: float,
    connections: int,
    max_age: int = 60,
) -> dict[str, Any]:
    """Warm up (which also calibrates the rate), then one measured run with a fresh pool."""
    url = server.env["SPLITLINK_PUBLIC_URL"] + "/v1/me"
    calibrated = 1000.0
    warm: wrk.WrkResult | None = None
    if warmup:
        # The warm-up pool may run out: that only ends the warm-up early with refusals.
        warm_pool = proof_pool(
            key, "GET", url, 8000, access_token=access_token, iat=int(time.time())
        )
        warm = wrk.run(
            server,
            write_pool(workdir / f"warm-{key.alg}.txt", access_token, warm_pool),
            seconds=warmup,
            connections=connections,
        )
        calibrated = max(warm.rate, 1.0)
        if warm.proofs_used >= len(warm_pool):
            calibrated = max(calibrated, len(warm_pool) / warmup)
    # Twice the calibrated rate for the whole run, so that a faster measured run still has
    # a proof for every request.
    count = int(calibrated * seconds * 2) + 2000
    made_at = int(time.time())
    pool = proof_pool(key, "GET", url, count, access_token=access_token, iat=made_at)
    result = wrk.run(
        server,
        write_pool(workdir / f"pool-{key.alg}.txt", access_token, pool),
        seconds=seconds,
        connections=connections,
    )
    finished_age = int(time.time()) - made_at
    return {
        **result.to_json(),
        "warmup_rate": round(warm.rate, 1) if warm else None,
        "pool_size": count,
        "pool_exhausted": result.proofs_used > count,
        "oldest_proof_age_at_end_s": finished_age,
        "proofs_fresh": finished_age < max_age,
    }


REFERENCES: dict[str, Algorithm] = {"bare": "EdDSA", "ed25519": "EdDSA", "p256": "ES256"}


def run(
    workdir: Path,
    *,
    seconds: float = 8.0,
    warmup: float = 2.0,
    connections: int = 32,
    backend: str = "sqlite",
    algorithms: tuple[Algorithm, ...] = ("EdDSA", "ES256"),
    references: tuple[str, ...] = tuple(REFERENCES),
) -> dict[str, Any]:
    keys = {alg: new_key(alg) for alg in algorithms}
    results: dict[str, Any] = {
        "seconds": seconds,
        "connections": connections,
        "backend": backend,
        "workers": 1,
    }
    tokens: dict[str, str] = {}
    with deploy.splitlink(workdir / "splitlink", backend, workers=1) as server:
        env = server.env
        public_url = env["SPLITLINK_PUBLIC_URL"]
        data_dir = Path(env["SPLITLINK_DATA_DIR"])
        for alg, key in keys.items():
            tokens[alg] = login(server, key, data_dir / "mail", f"me-{alg.lower()}@example.com")[
                "access_token"
            ]
            results[f"me_{alg}"] = measure_splitlink(
                server,
                key,
                tokens[alg],
                workdir,
                seconds=seconds,
                warmup=warmup,
                connections=connections,
            )
    # The references: the same requests, proofs reused in turn (nothing there checks replay).
    for name in references:
        alg = REFERENCES[name]
        key = keys[alg]
        pool = proof_pool(
            key,
            "GET",
            public_url + "/v1/me",
            5000,
            access_token=tokens[alg],
            iat=int(time.time()),
        )
        pool_file = write_pool(workdir / f"ref-{name}.txt", tokens[alg], pool)
        ref_env = {**env, "BENCH_DEVICE_JWK": json.dumps(dict(key.public.jwk))}
        with procs.running(name, workdir=workdir, workers=1, env=ref_env) as server:
            if warmup:
                wrk.run(server, pool_file, seconds=warmup, connections=connections, cycle=True)
            measured = wrk.run(
                server, pool_file, seconds=seconds, connections=connections, cycle=True
            )
        results[name] = measured.to_json()
    return results
