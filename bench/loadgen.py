"""The load generator for logins, growth and the soak: a separate process from the server.

    python -m bench.loadgen flow --url URL --public-url URL --mail-dir DIR --count N ...
    python -m bench.loadgen soak --url URL --public-url URL --mail-dir DIR --duration S ...

A flow runs its phases one after the other, each with `concurrency` keep-alive connections:
`start` (N logins started, N distinct new addresses and device keys), then the email halves are
collected from the dev mailbox (not timed: that is the mailbox, not the server), then `complete`
(the N logins completed), `refresh` (each session's refresh token rotated once) and `me` (GET
/v1/me, `me_per_login` times per session). Proofs are made before each phase, outside its
timing. The result is JSON: per phase its wall time, answers by status and latency percentiles.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from bench.client import Answer, Connection, HttpError
from bench.devices import new_key, proof, read_email_halves
from bench.placement import owning_worker
from bench.stats import summarize
from protocol.keys import SigningKey

GRANT_MAGIC_LINK = "urn:splitlink:params:oauth:grant-type:magic-link"
# Answered by every worker at once, with no database and no side effect.
PROBE_PATH = "/.well-known/jwks.json"
FORM = "application/x-www-form-urlencoded"

Job = Callable[[Connection], Awaitable[Answer]]


@dataclass
class Phase:
    name: str
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    answers: list[Answer | None] = field(default_factory=list)
    sample_error: str | None = None

    def report(self, expected: int, *, raw: bool = False) -> dict[str, Any]:
        ok = self.statuses.get(str(expected), 0)
        samples = {"latencies_ms": [round(s * 1000, 3) for s in self.latencies]} if raw else {}
        return {
            "requests": sum(self.statuses.values()),
            "ok": ok,
            "statuses": dict(self.statuses),
            "seconds": round(self.seconds, 4),
            "rate": round(ok / self.seconds, 1) if self.seconds else 0.0,
            "latency_ms": summarize(self.latencies),
            "sample_error": self.sample_error,
            **samples,
        }


async def run_phase(
    name: str, jobs: list[Job], connections: list[Connection], expected: int
) -> Phase:
    phase = Phase(name, answers=[None] * len(jobs))
    next_job = iter(range(len(jobs)))

    async def worker(conn: Connection) -> None:
        for i in next_job:
            try:
                answer = await jobs[i](conn)
            except (HttpError, OSError) as exc:
                phase.statuses["connection-error"] += 1
                phase.sample_error = phase.sample_error or str(exc)
                continue
            phase.answers[i] = answer
            phase.latencies.append(answer.seconds)
            phase.statuses[str(answer.status)] += 1
            if answer.status != expected and phase.sample_error is None:
                phase.sample_error = f"{answer.status} {answer.body[:300]!r}"

    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in connections))
    phase.seconds = time.perf_counter() - started
    return phase


@dataclass
class Login:
    email: str
    key: SigningKey
    attempt_id: str = ""
    device_half: str = ""
    email_half: str = ""
    access_token: str = ""
    refresh_token: str = ""


class Flow:
    def __init__(self, url: str, public_url: str, mail_dir: Path, concurrency: int) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.public_url = public_url.rstrip("/")
        self.mail_dir = mail_dir
        self.connections = [Connection(self.host, self.port) for _ in range(concurrency)]

    async def close(self) -> None:
        for conn in self.connections:
            await conn.close()

    async def _open_probed(self, workers: list[int]) -> tuple[Connection, int | None]:
        """A new connection, used once so that a worker has accepted it, and that worker."""
        conn = Connection(self.host, self.port)
        await conn.request("GET", PROBE_PATH)
        port = conn.local_port()
        return conn, None if port is None else owning_worker(self.port, port, workers)

    async def spread(self, workers: list[int], *, tries_per_connection: int = 20) -> list[int]:
        """Open the connections so that no worker holds more than its share of them
        (bench.placement): each new connection is kept if the worker that accepted it has room,
        and closed otherwise. Returns how many each worker holds, in the order of `workers`.
        Past the bound on tries, the rest are kept as they land, so a flow always runs."""
        count = len(self.connections)
        room = -(-count // len(workers))
        held: Counter[int | None] = Counter()
        kept: list[Connection] = []
        tries = 0
        while len(kept) < count:
            conn, owner = await self._open_probed(workers)
            tries += 1
            if (owner is not None and held[owner] < room) or tries > tries_per_connection * count:
                held[owner] += 1
                kept.append(conn)
            else:
                await conn.close()
        self.connections = kept
        return [held[pid] for pid in workers]

    def reopened(self) -> int:
        """Connections the server closed during the flow and that were opened again."""
        return sum(max(0, conn.opened - 1) for conn in self.connections)

    def new_logins(self, count: int, tag: str, alg: str) -> list[Login]:
        return [Login(f"bench-{tag}-{i}@example.com", new_key(alg)) for i in range(count)]  # type: ignore[arg-type]

    async def start(self, logins: list[Login]) -> Phase:
        url = self.public_url + "/v1/login/start"
        proofs = [proof(login.key, "POST", url) for login in logins]

        def job(i: int) -> Job:
            body = json.dumps({"email": logins[i].email, "device_name": "bench device"}).encode()
            return lambda c: c.request(
                "POST",
                "/v1/login/start",
                headers={"DPoP": proofs[i]},
                body=body,
                content_type="application/json",
            )

        phase = await run_phase(
            "start", [job(i) for i in range(len(logins))], self.connections, 202
        )
        for login, answer in zip(logins, phase.answers, strict=True):
            if answer is not None and answer.status == 202:
                started = json.loads(answer.body)
                login.attempt_id, login.device_half = started["attempt_id"], started["device_half"]
        return phase

    def collect_mail(self, logins: list[Login], timeout: float = 60.0) -> float:
        started = time.perf_counter()
        wanted = [login.attempt_id for login in logins if login.attempt_id]
        halves = read_email_halves(self.mail_dir, wanted, timeout=timeout)
        for login in logins:
            login.email_half = halves.get(login.attempt_id, "")
        return time.perf_counter() - started

    async def complete(self, logins: list[Login]) -> Phase:
        ready = [login for login in logins if login.email_half]
        forms = [
            {
                "grant_type": GRANT_MAGIC_LINK,
                "attempt_id": login.attempt_id,
                "device_half": login.device_half,
                "email_half": login.email_half,
            }
            for login in ready
        ]
        return await self._token_requests("complete", ready, forms)

    async def refresh(self, logins: list[Login]) -> Phase:
        ready = [login for login in logins if login.refresh_token]
        forms = [
            {"grant_type": "refresh_token", "refresh_token": login.refresh_token} for login in ready
        ]
        return await self._token_requests("refresh", ready, forms)

    async def _token_requests(
        self, name: str, ready: list[Login], forms: list[dict[str, str]]
    ) -> Phase:
        """One token request per login, each with a fresh proof; the tokens of every 200 are
        kept for the next phase."""
        url = self.public_url + "/oauth2/token"
        proofs = [proof(login.key, "POST", url) for login in ready]

        def job(i: int) -> Job:
            body = urlencode(forms[i]).encode()
            return lambda c: c.request(
                "POST", "/oauth2/token", headers={"DPoP": proofs[i]}, body=body, content_type=FORM
            )

        phase = await run_phase(name, [job(i) for i in range(len(ready))], self.connections, 200)
        for login, answer in zip(ready, phase.answers, strict=True):
            if answer is not None and answer.status == 200:
                tokens = json.loads(answer.body)
                login.access_token = tokens["access_token"]
                login.refresh_token = tokens["refresh_token"]
        return phase

    async def me(self, logins: list[Login], per_login: int) -> Phase:
        ready = [login for login in logins if login.access_token]
        url = self.public_url + "/v1/me"
        work = [
            (
                f"DPoP {login.access_token}",
                proof(login.key, "GET", url, access_token=login.access_token),
            )
            for _ in range(per_login)
            for login in ready
        ]

        def job(i: int) -> Job:
            authorization, dpop = work[i]
            return lambda c: c.request(
                "GET", "/v1/me", headers={"Authorization": authorization, "DPoP": dpop}
            )

        return await run_phase("me", [job(i) for i in range(len(work))], self.connections, 200)


async def flow(args: argparse.Namespace) -> dict[str, Any]:
    runner = Flow(args.url, args.public_url, Path(args.mail_dir), args.concurrency)
    phases = set(args.phases.split(","))
    result: dict[str, Any] = {"count": args.count, "concurrency": args.concurrency, "phases": {}}
    cpu_before = time.process_time()
    count = args.count
    try:
        if args.spread_over:
            workers = [int(pid) for pid in args.spread_over.split(",")]
            result["connections_per_worker"] = await runner.spread(workers)
        if args.warmup:
            warm = runner.new_logins(args.warmup, args.tag + "-warm", args.alg)
            started = await runner.start(warm)
            runner.collect_mail(warm)
            completed = await runner.complete(warm)
            result["warmup"] = {"start": started.report(202), "complete": completed.report(200)}
            if args.target_seconds:
                # As many logins as the warm-up rate fits in the target time, within bounds.
                seconds = started.seconds + completed.seconds
                ok = completed.statuses.get("200", 0)
                rate = ok / seconds if seconds else 0.0
                count = max(args.count, min(args.max_count, int(rate * args.target_seconds)))
        result["count"] = count
        logins = runner.new_logins(count, args.tag, args.alg)
        start = await runner.start(logins)
        result["phases"]["start"] = start.report(202, raw=args.raw)
        result["mail_wait_seconds"] = round(runner.collect_mail(logins), 3)
        if "complete" in phases:
            result["phases"]["complete"] = (await runner.complete(logins)).report(200, raw=args.raw)
        if "refresh" in phases:
            result["phases"]["refresh"] = (await runner.refresh(logins)).report(200, raw=args.raw)
        if "me" in phases:
            result["phases"]["me"] = (await runner.me(logins, args.me_per_login)).report(
                200, raw=args.raw
            )
        result["connections_reopened"] = runner.reopened()
    finally:
        await runner.close()
    result["generator_cpu_seconds"] = round(time.process_time() - cpu_before, 3)
    return result


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    """Rounds of `round_size` logins (start, mail, complete, refresh, /v1/me), paced at
    `rate` logins per second, until `duration` seconds have passed."""
    runner = Flow(args.url, args.public_url, Path(args.mail_dir), args.concurrency)
    totals: Counter[str] = Counter()
    latencies: dict[str, list[float]] = {}
    rounds = 0
    deadline = time.monotonic() + args.duration
    try:
        while time.monotonic() < deadline:
            round_started = time.monotonic()
            logins = runner.new_logins(args.round_size, f"{args.tag}-{rounds}", args.alg)
            phases = [await runner.start(logins)]
            runner.collect_mail(logins)
            phases.append(await runner.complete(logins))
            phases.append(await runner.refresh(logins))
            phases.append(await runner.me(logins, args.me_per_login))
            for phase in phases:
                for status, n in phase.statuses.items():
                    totals[f"{phase.name}:{status}"] += n
                latencies.setdefault(phase.name, []).extend(phase.latencies)
            rounds += 1
            pause = args.round_size / args.rate - (time.monotonic() - round_started)
            if pause > 0:
                await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
    finally:
        await runner.close()
    return {
        "rounds": rounds,
        "logins": rounds * args.round_size,
        "statuses": dict(totals),
        "latency_ms": {name: summarize(values) for name, values in latencies.items()},
    }


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("flow", "soak"):
        cmd = sub.add_parser(name)
        cmd.add_argument("--url", required=True)
        cmd.add_argument("--public-url", required=True)
        cmd.add_argument("--mail-dir", required=True)
        cmd.add_argument("--concurrency", type=int, default=32)
        cmd.add_argument("--alg", default="EdDSA", choices=["EdDSA", "ES256"])
        # Part of every address the flow makes up: new for each flow, so that no two flows
        # start logins for the same address.
        cmd.add_argument("--tag", default=f"{os.getpid()}-{time.time_ns()}")
        cmd.add_argument("--me-per-login", type=int, default=1)
        cmd.add_argument("--out", default="-")
    flow_cmd = sub.choices["flow"]
    flow_cmd.add_argument(
        "--spread-over",
        default="",
        help="the server's worker process ids, comma-separated: give each its share of the "
        "connections (bench.placement)",
    )
    flow_cmd.add_argument("--count", type=int, required=True)
    flow_cmd.add_argument("--warmup", type=int, default=0)
    flow_cmd.add_argument("--phases", default="start,complete")
    flow_cmd.add_argument(
        "--target-seconds",
        type=float,
        default=0.0,
        help="after the warm-up, raise --count to what the warm-up rate fits in this time",
    )
    flow_cmd.add_argument("--max-count", type=int, default=4000)
    flow_cmd.add_argument(
        "--raw", action="store_true", help="every latency too, so that runs can be pooled"
    )
    soak_cmd = sub.choices["soak"]
    soak_cmd.add_argument("--duration", type=float, required=True)
    soak_cmd.add_argument("--rate", type=float, default=50.0)
    soak_cmd.add_argument("--round-size", type=int, default=50)
    sub.add_parser(
        "flows",
        help="flows one after the other, each given as a JSON array of `flow` options on a line "
        "of standard input, each answered with its JSON on one line of standard output",
    )
    return parser


async def flows() -> None:
    """Many flows from one process: the measurements that run a flow per turn pay for the
    interpreter's start and its imports (0.3 s) once instead of every turn."""
    while line := sys.stdin.readline():
        args = parser().parse_args(["flow", *json.loads(line)])
        sys.stdout.write(json.dumps(await flow(args)) + "\n")
        sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)

    import uvloop

    if args.command == "flows":
        uvloop.run(flows())
        return
    result = uvloop.run(flow(args) if args.command == "flow" else soak(args))
    text = json.dumps(result, indent=2)
    if args.out == "-":
        sys.stdout.write(text + "\n")
    else:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
