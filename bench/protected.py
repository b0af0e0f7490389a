"""Measurement 1: GET /v1/me throughput against a bare endpoint and the one-verification ceilings.

Every app has its own server, with one uvicorn worker and the same uvicorn settings
(bench/serve.py); all run at once, and the load goes to one at a time, in rounds (`run`). Each
receives byte-for-byte the same kind of request from wrk: `Authorization: DPoP <token>` and a
`DPoP` proof. For the splitlink server every proof is used once (unique `jti`, fresh `iat`,
`ath` of the token); the pool is sized from a calibration run so that it is not exhausted.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from bench import deploy, procs, wrk
from bench.devices import new_key, proof, proof_pool, read_email_halves
from bench.orders import rounds_of_turns
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


def combined(results: list[wrk.WrkResult]) -> wrk.WrkResult:
    """Several runs of one target as one: counts and CPU added up; the latencies of the run
    whose rate is the median (percentiles of separate runs do not add up)."""
    middle = sorted(results, key=lambda result: result.rate)[len(results) // 2]
    return wrk.WrkResult(
        requests=sum(r.requests for r in results),
        seconds=sum(r.seconds for r in results),
        non_2xx=sum(r.non_2xx for r in results),
        socket_errors=sum(r.socket_errors for r in results),
        latency_ms=middle.latency_ms,
        proofs_used=sum(r.proofs_used for r in results),
        server_cpu_seconds=sum(r.server_cpu_seconds for r in results),
        generator_cpu_seconds=sum(r.generator_cpu_seconds for r in results),
        machine_busy_seconds=sum(r.machine_busy_seconds for r in results),
    )


class _Target:
    """One server and the requests it gets: the splitlink server's /v1/me with fresh proofs
    for each run, or a reference app with one pool of proofs used in turn."""

    def __init__(
        self,
        name: str,
        server: procs.Server,
        key: SigningKey,
        access_token: str,
        workdir: Path,
        *,
        fresh_proofs: bool,
        connections: int,
    ) -> None:
        self.name = name
        self.server = server
        self._key = key
        self._token = access_token
        self._workdir = workdir
        self._fresh = fresh_proofs
        self._connections = connections
        self._url = server.env["SPLITLINK_PUBLIC_URL"] + "/v1/me"
        self.rate = 1000.0
        self.warmup_rate: float | None = None
        self.runs: list[wrk.WrkResult] = []
        self.pool_sizes: list[int] = []
        self.pool_exhausted = False
        self.oldest_proof_age = 0
        self._cycled: Path | None = None

    def _pool(self, count: int, tag: str) -> tuple[Path, int]:
        made_at = int(time.time())
        pool = proof_pool(self._key, "GET", self._url, count, access_token=self._token, iat=made_at)
        return write_pool(self._workdir / f"{self.name}-{tag}.txt", self._token, pool), made_at

    def _cycled_pool(self) -> Path:
        if self._cycled is None:
            raise RuntimeError("warm_up comes first")
        return self._cycled

    def warm_up(self, seconds: float) -> None:
        """A first run that is not counted; for the splitlink server it also calibrates the
        rate, which sizes the pools (its own pool may run out: that only ends it early)."""
        if not self._fresh:
            self._cycled, _ = self._pool(5000, "cycled")
        if not seconds:
            return
        pool = self._pool(8000, "warm")[0] if self._fresh else self._cycled_pool()
        warm = wrk.run(
            self.server, pool, seconds=seconds, connections=self._connections, cycle=not self._fresh
        )
        self.warmup_rate = round(warm.rate, 1)
        self.rate = max(warm.rate, 1.0)
        if self._fresh and warm.proofs_used >= 8000:
            self.rate = max(self.rate, 8000 / seconds)

    def measure(self, seconds: float, tag: str) -> None:
        if self._fresh:
            # Twice the calibrated rate, so that a faster run still has a proof for every
            # request; each proof is sent once.
            count = int(self.rate * seconds * 2) + 1000
            pool, made_at = self._pool(count, tag)
            self.pool_sizes.append(count)
        else:
            pool, made_at = self._cycled_pool(), int(time.time())
        result = wrk.run(
            self.server, pool, seconds=seconds, connections=self._connections, cycle=not self._fresh
        )
        self.runs.append(result)
        if self._fresh:
            self.pool_exhausted = self.pool_exhausted or result.proofs_used > count
            self.oldest_proof_age = max(self.oldest_proof_age, int(time.time()) - made_at)

    def report(self, max_age: int) -> dict[str, Any]:
        report: dict[str, Any] = {
            **combined(self.runs).to_json(),
            "rounds_rate": [round(run.rate, 1) for run in self.runs],
        }
        if self._fresh:
            report |= {
                "warmup_rate": self.warmup_rate,
                "pool_size": sum(self.pool_sizes),
                "pool_exhausted": self.pool_exhausted,
                "oldest_proof_age_at_end_s": self.oldest_proof_age,
                "proofs_fresh": self.oldest_proof_age < max_age,
            }
        return report


REFERENCES: dict[str, Algorithm] = {
    "bare": "EdDSA",
    "ed25519": "EdDSA",
    "p256": "ES256",
    "ed25519_stored": "EdDSA",
    "p256_stored": "ES256",
}


def target_name(alg: str, label: str | None = None) -> str:
    """`me_<alg>`, or `me_<alg>-<label>` for the server of the tree called `label`."""
    return f"me_{alg}" if label is None else f"me_{alg}-{label}"


def target_names(algorithms: Sequence[str], labels: Sequence[str | None]) -> list[str]:
    """The splitlink targets in the order their turns are drawn from: each algorithm's servers
    side by side, so that the trees' turns of one figure alternate (bench.orders)."""
    return [target_name(alg, label) for alg in algorithms for label in labels]


def run(
    workdir: Path,
    *,
    seconds: float = 8.0,
    warmup: float = 2.0,
    rounds: int = 4,
    connections: int = 32,
    backend: str = "sqlite",
    algorithms: tuple[Algorithm, ...] = ("EdDSA", "ES256"),
    references: tuple[str, ...] = tuple(REFERENCES),
    max_age: int = 60,
    trees: Mapping[str, procs.Tree] | None = None,
) -> dict[str, Any]:
    """Every server runs at once; after a warm-up each, the measured time is split into
    `rounds` runs per server, one server at a time, the order rotating from round to round. A
    ratio then compares two servers measured in the same stretches of the run: on this kind of
    machine the speed drifts within minutes, and measured one after the other, one figure could
    fall in a slow stretch and its baseline in a fast one.

    With `trees` (label -> source tree), one splitlink server runs the code of each tree, its
    targets named by `target_name`, and the turns follow balanced orders (bench.orders), so
    that each tree is measured first as often as the other."""
    keys = {alg: new_key(alg) for alg in algorithms}
    labelled: dict[str | None, procs.Tree] = (
        {label: tree for label, tree in trees.items()} if trees else {None: procs.THIS_TREE}
    )
    results: dict[str, Any] = {
        "seconds": seconds,
        "rounds": rounds,
        "connections": connections,
        "backend": backend,
        "workers": 1,
    }
    with contextlib.ExitStack() as stack:
        servers = {
            label: stack.enter_context(
                deploy.splitlink(workdir / (label or "splitlink"), backend, workers=1, tree=tree)
            )
            for label, tree in labelled.items()
        }
        tokens = {
            (label, alg): login(
                server,
                key,
                Path(server.env["SPLITLINK_DATA_DIR"]) / "mail",
                f"me-{alg.lower()}@example.com",
            )["access_token"]
            for label, server in servers.items()
            for alg, key in keys.items()
        }
        targets = [
            _Target(
                target_name(alg, label),
                servers[label],
                key,
                tokens[label, alg],
                workdir,
                fresh_proofs=True,
                connections=connections,
            )
            for alg, key in keys.items()
            for label in servers
        ]
        # The references: the same requests, proofs reused in turn (nothing there checks
        # replay), beside the first server.
        first = next(iter(servers))
        env = servers[first].env
        for name in references:
            alg = REFERENCES[name]
            ref_env = {
                **env,
                "BENCH_DEVICE_JWK": json.dumps(dict(keys[alg].public.jwk)),
                "BENCH_FLOOR_DATABASE": str(workdir / f"{name}.sqlite3"),
            }
            server = stack.enter_context(
                procs.running(name, workdir=workdir, workers=1, env=ref_env)
            )
            targets.append(
                _Target(
                    name,
                    server,
                    keys[alg],
                    tokens[first, alg],
                    workdir,
                    fresh_proofs=False,
                    connections=connections,
                )
            )
        for target in targets:
            target.warm_up(warmup)
        share = seconds / max(1, rounds)
        turns = rounds_of_turns(len(targets), rounds, balanced=trees is not None)
        for turn, order in enumerate(turns):
            for index in order:
                targets[index].measure(share, f"round-{turn}")
    for target in targets:
        results[target.name] = target.report(max_age)
    if trees:
        results["servers"] = {
            label: {"code": labelled[label].where(server.code)} for label, server in servers.items()
        }
    return results
