"""A splitlink server for one measurement: a fresh database (SQLite file or PostgreSQL database),
migrated, optionally pre-seeded, served by bench/serve.py; and the load generator beside it.
The server and its migrations come from a source tree (this one unless told otherwise); the load
generator always from this one."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import pg, procs
from bench.seed import seed

BACKENDS = ("sqlite", "postgresql")


@dataclass(frozen=True)
class Database:
    """A fresh, migrated and optionally seeded database, with what its server will need."""

    workdir: Path
    port: int
    env: dict[str, str]
    tree: procs.Tree = procs.THIS_TREE


@contextmanager
def database(
    workdir: Path,
    backend: str,
    *,
    seed_users: int = 0,
    info: dict[str, Any] | None = None,
    tree: procs.Tree = procs.THIS_TREE,
) -> Iterator[Database]:
    """A fresh database (SQLite file or PostgreSQL database), migrated by `tree` and seeded
    with `seed_users`; removed at the end. `info` receives the seeding time."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: one of {', '.join(BACKENDS)}")
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    port = procs.free_port()
    public_url = f"http://127.0.0.1:{port}"
    data_dir = workdir / "var"
    db_name = f"splitlink_bench_{port}"
    if backend == "sqlite":
        database_url = f"sqlite:///{data_dir / 'splitlink.db'}"
    else:
        database_url = pg.fresh_database(db_name)
    # The server's data directory holds nothing here but the dev mailbox (the database has its
    # own URL, the root secret comes from the environment). It goes to memory where it can: the
    # load generator deletes each message once read, and on ext4 creating a file among many
    # recently deleted ones walked the inode bitmap (perf: `__ext4_new_inode` ->
    # `recently_deleted`, 8 to 10 % of the workers' CPU under the login measurement). That is
    # the harness's mailbox, not the server: mail in production goes out over SMTP.
    mailbox_root = _memory_dir() or data_dir
    env = procs.bench_env(mailbox_root, database_url, public_url, tree=tree)
    try:
        procs.migrate(env, tree=tree)
        if seed_users:
            seconds = seed(database_url, seed_users)
            if info is not None:
                info["seed_seconds"] = round(seconds, 1)
        yield Database(workdir, port, env, tree)
    finally:
        if mailbox_root != data_dir:
            shutil.rmtree(mailbox_root, ignore_errors=True)
        if backend == "postgresql":
            pg.drop_database(db_name)
        elif seed_users:
            shutil.rmtree(data_dir, ignore_errors=True)  # a seeded file is large


@contextmanager
def serving(database: Database, *, workers: int) -> Iterator[procs.Server]:
    """splitlink served by bench/serve.py on `database`."""
    with procs.running(
        "splitlink",
        workdir=database.workdir,
        workers=workers,
        env=database.env,
        port=database.port,
        tree=database.tree,
    ) as server:
        yield server


@contextmanager
def splitlink(
    workdir: Path,
    backend: str,
    *,
    workers: int,
    seed_users: int = 0,
    info: dict[str, Any] | None = None,
    tree: procs.Tree = procs.THIS_TREE,
) -> Iterator[procs.Server]:
    """Serve splitlink of `tree` on a fresh database. `info` receives the seeding time."""
    with (
        database(workdir, backend, seed_users=seed_users, info=info, tree=tree) as prepared,
        serving(prepared, workers=workers) as server,
    ):
        yield server


def _memory_dir() -> Path | None:
    """A new private directory on a memory file system, or None where there is none."""
    shm = Path("/dev/shm")  # noqa: S108 - mkdtemp makes a fresh directory, mode 0700
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        return None
    return Path(tempfile.mkdtemp(prefix="splitlink-bench-", dir=shm))


def mail_dir(server: procs.Server) -> Path:
    return Path(server.env["SPLITLINK_DATA_DIR"]) / "mail"


def _loadgen_env(server: procs.Server) -> dict[str, str]:
    """The server's settings, with this tree's code on the path (the server may run another's)."""
    return {**server.env, "PYTHONPATH": str(procs.ROOT)}


def _target(server: procs.Server, *, spread: bool) -> list[str]:
    """The options that point the load generator at `server` (and, with `spread`, at its
    workers: each gets its share of the connections, bench.placement)."""
    spread_over = (
        ["--spread-over", ",".join(str(pid) for pid in server.worker_pids())]
        if spread and server.workers > 1
        else []
    )
    return [
        "--url",
        server.url,
        "--public-url",
        server.env["SPLITLINK_PUBLIC_URL"],
        "--mail-dir",
        str(mail_dir(server)),
        *spread_over,
    ]


class LoadgenSession:
    """One load generator process that runs flow after flow against one server
    (`python -m bench.loadgen flows`), for measurements that run many short turns."""

    def __init__(self, server: procs.Server, workdir: Path, *, spread: bool = False) -> None:
        self._server = server
        self._target = _target(server, spread=spread)
        self._errors = workdir / f"loadgen-{server.port}.err"
        with self._errors.open("wb") as errors:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "bench.loadgen", "flows"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
                cwd=procs.ROOT,
                env=_loadgen_env(server),
            )

    def flow(self, *options: str) -> tuple[dict[str, Any], float]:
        """One flow: its JSON, and the generator's CPU seconds during it."""
        stdin, stdout = self._process.stdin, self._process.stdout
        if stdin is None or stdout is None:  # pragma: no cover - both are pipes
            raise RuntimeError("the load generator has no pipes")
        stdin.write(json.dumps([*self._target, *options]) + "\n")
        stdin.flush()
        line = stdout.readline()
        if not line:
            self._process.wait(timeout=10)
            raise RuntimeError(
                f"load generator failed:\n{self._errors.read_text()[-3000:]}\n"
                f"server log:\n{self._server.log()[-3000:]}"
            )
        result: dict[str, Any] = json.loads(line)
        return result, float(result["generator_cpu_seconds"])

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()


@contextmanager
def loadgen_session(
    server: procs.Server, workdir: Path, *, spread: bool = False
) -> Iterator[LoadgenSession]:
    session = LoadgenSession(server, workdir, spread=spread)
    try:
        yield session
    finally:
        session.close()


def loadgen(
    server: procs.Server,
    command: str,
    *options: str,
    timeout: float = 600,
) -> tuple[dict[str, Any], float]:
    """Run `python -m bench.loadgen COMMAND` against `server`: its JSON, and its CPU seconds.
    The connections land on the server's workers where the workers accept them."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.loadgen",
            command,
            *_target(server, spread=False),
            *options,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=procs.ROOT,
        env=_loadgen_env(server),
        check=False,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(
            f"load generator failed:\n{done.stderr[-3000:]}\nserver log:\n{server.log()[-3000:]}"
        )
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    result: dict[str, Any] = json.loads(done.stdout)
    return result, cpu
