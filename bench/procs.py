"""Server processes for the benchmarks, and their own CPU and memory accounting from /proc."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench.serve import SERVED_FROM

ROOT = Path(__file__).resolve().parent.parent
SERVE = ROOT / "bench" / "serve.py"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    # The command name may hold spaces and parentheses: split after the last ')'.
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process (every thread), in seconds."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(entry.name))[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@dataclass(frozen=True, slots=True)
class Tree:
    """A source tree whose code a server runs, and the interpreter that runs it."""

    root: Path
    python: Path

    @classmethod
    def at(cls, root: Path) -> Tree:
        """The tree at `root`, run by its own .venv if it has one, else by this interpreter
        (this tree's venv: the same dependencies, the tree's own code)."""
        root = root.resolve()
        if not (root / "server" / "app.py").is_file():
            raise ValueError(f"{root} holds no server code (server/app.py)")
        own = root / ".venv" / "bin" / "python"
        return cls(root=root, python=own if own.exists() else Path(sys.executable))

    def where(self, code: Path | None) -> str | None:
        """Where in this tree a server found its code: a path a reader of the results can
        follow on any machine (a server whose code lies elsewhere refuses to start)."""
        return None if code is None else str(code.resolve().relative_to(self.root.resolve()))


# The tree the harness itself is in; every measurement runs it unless told otherwise.
THIS_TREE = Tree(root=ROOT, python=Path(sys.executable))


@dataclass
class Server:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    workers: int
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    # Where the app's top-level package was imported from (bench/serve.py says so at start).
    code: Path | None = None

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def pids(self) -> list[int]:
        """The uvicorn parent and everything it started."""
        return [self.process.pid, *descendants(self.process.pid)]

    def worker_pids(self) -> list[int]:
        if self.workers == 1:
            return [self.process.pid]
        return [p for p in descendants(self.process.pid) if "spawn_main" in _cmdline(p)]

    def cpu_seconds(self) -> float:
        total = 0.0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                total += cpu_seconds(pid)
        return total

    def worker_rss(self) -> dict[int, int]:
        return {pid: rss_bytes(pid) for pid in self.worker_pids()}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def bench_env(
    data_dir: Path, database_url: str, public_url: str, *, tree: Tree = THIS_TREE
) -> dict[str, str]:
    """Settings for benchmark servers of `tree`: rate limits out of the way, no mail on the
    console."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPLITLINK_")}
    env.update(
        {
            "SPLITLINK_PUBLIC_URL": public_url,
            "SPLITLINK_DATA_DIR": str(data_dir),
            "SPLITLINK_DATABASE_URL": database_url,
            # A fixed root secret, so every worker shares it without a file in the data dir.
            "SPLITLINK_SECRET_KEY": "bench-root-secret-" + "0123456789abcdef" * 3,
            "SPLITLINK_RATE_LIMIT_START_PER_IP": "100000000",
            "SPLITLINK_RATE_LIMIT_START_PER_EMAIL": "100000000",
            "SPLITLINK_RATE_LIMIT_START_PER_EMAIL_KEY": "100000000",
            "SPLITLINK_RATE_LIMIT_START_PER_EMAIL_CLIENT": "100000000",
            "SPLITLINK_RATE_LIMIT_START_PER_NETWORK": "100000000",
            "SPLITLINK_RATE_LIMIT_COMPLETE_PER_IP": "100000000",
            "SPLITLINK_DEV_MAILBOX_CONSOLE": "false",
            "SPLITLINK_OUTBOX_POLL_INTERVAL": "0.05",
            "PYTHONPATH": str(tree.root),
        }
    )
    return env


def migrate(env: dict[str, str], *, tree: Tree = THIS_TREE) -> None:
    """`splitlink migrate` with the migrations of `tree`."""
    subprocess.run(
        [str(tree.python.parent / "splitlink"), "migrate"],
        env={**env, "PYTHONPATH": str(tree.root)},
        check=True,
        capture_output=True,
        cwd=tree.root,
    )


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310 (loopback only)
            return int(answer.status) < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except OSError:
        return False


@contextmanager
def running(
    app: str,
    *,
    workdir: Path,
    workers: int = 1,
    env: dict[str, str] | None = None,
    port: int | None = None,
    tree: Tree = THIS_TREE,
) -> Iterator[Server]:
    """Start bench/serve.py APP with the code of `tree`, wait until every worker answers, stop
    it at the end. This tree's serve.py runs for every tree, so that servers differ only in
    their code; `-P` keeps its directory off the path, and the tree comes first on it."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"{app}-{port}.log"
    process_env = {**(env or os.environ), "PYTHONPATH": str(tree.root)}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                str(tree.python),
                "-P",
                str(SERVE),
                app,
                "--port",
                str(port),
                "--workers",
                str(workers),
                "--tree",
                str(tree.root),
            ],
            env=process_env,
            cwd=tree.root,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(app, url, process, workers, log_path, process_env)
    probe = url + ("/.well-known/jwks.json" if app == "splitlink" else "/v1/me")
    try:
        deadline = time.monotonic() + 60
        while not _ready(probe):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{app} did not start:\n{server.log()[-4000:]}")
            time.sleep(0.1)
        # With several workers the first answer proves one of them: wait for the others too.
        while len(server.worker_pids()) < workers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{app}: fewer than {workers} workers started")
            time.sleep(0.1)
        if workers > 1:
            time.sleep(1.0)
        server.code = served_from(server.log())
        yield server
    finally:
        stop(process)


def served_from(log: str) -> Path | None:
    """The file the app's package was imported from, as bench/serve.py logged it."""
    for line in log.splitlines():
        if line.startswith(SERVED_FROM):
            return Path(line.removeprefix(SERVED_FROM).strip())
    return None


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


def database_server_cpu() -> dict[int, float]:
    """CPU seconds so far of each PostgreSQL server process on this machine (the postmaster,
    each connection's backend, the writers and autovacuum: all are named `postgres`)."""
    found: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            if Path(f"/proc/{entry.name}/comm").read_text().strip() == "postgres":
                found[int(entry.name)] = cpu_seconds(int(entry.name))
    return found


class CpuWindow:
    """CPU used between start and stop: by the server, the load generator (given as seconds),
    and everything else on the machine (other processes: a noisy neighbour shows up here).
    With `database=True`, also the PostgreSQL server's own share of that everything else."""

    def __init__(self, server: Server, *, database: bool = False) -> None:
        self.server = server
        self._database = database
        self.database_seconds = 0.0

    def __enter__(self) -> CpuWindow:
        self._database0 = database_server_cpu() if self._database else {}
        self._server0 = self.server.cpu_seconds()
        self._busy0, self._total0 = machine_busy_seconds()
        self._wall0 = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server_seconds = self.server.cpu_seconds() - self._server0
        busy, _ = machine_busy_seconds()
        self.wall = time.monotonic() - self._wall0
        self.machine_busy_seconds = busy - self._busy0
        if self._database:
            # A process that ended within the window is missed; one that started counts whole.
            self.database_seconds = sum(
                seconds - self._database0.get(pid, 0.0)
                for pid, seconds in database_server_cpu().items()
            )

    def report(self, generator_seconds: float) -> dict[str, float]:
        return cpu_report(
            wall=self.wall,
            server=self.server_seconds,
            generator=generator_seconds,
            machine_busy=self.machine_busy_seconds,
        )


def cpu_report(
    *, wall: float, server: float, generator: float, machine_busy: float
) -> dict[str, float]:
    """CPU seconds over `wall` seconds, as cores: the server's, the load generator's and the
    rest of the machine's."""
    per = wall or 1.0
    other = machine_busy - server - generator
    return {
        "wall_seconds": round(wall, 3),
        "server_cpu_seconds": round(server, 3),
        "server_cpu_cores": round(server / per, 3),
        "generator_cpu_cores": round(generator / per, 3),
        "other_cpu_cores": round(max(0.0, other) / per, 3),
    }
