"""One way to start every server the benchmarks compare, so that they differ only in the app.

    python -m bench.serve APP --port PORT [--workers N] [--tree PATH]

APP is one of `APPS` below. With `--tree`, the app's package must come from PATH (the harness
runs the servers of other source trees so, bench/procs.py): it says where it found it, and
refuses to serve one from elsewhere.

uvicorn runs with uvloop and httptools, no access log, no server header and no proxy headers;
`splitlink` is the same factory `splitlink serve` runs. Each worker is a separate process whose
CPU time and RSS the harness reads from /proc.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import uvicorn

APPS = {
    "splitlink": "server.app:create_app_from_environment",
    "bare": "bench.apps:bare_app",
    "p256": "bench.apps:p256_app",
    "ed25519": "bench.apps:ed25519_app",
    "p256_stored": "bench.apps:p256_stored_app",
    "ed25519_stored": "bench.apps:ed25519_stored_app",
}


def uvicorn_options(workers: int) -> dict[str, object]:
    return {
        "loop": "uvloop",
        "http": "httptools",
        "workers": workers,
        "log_level": "warning",
        "access_log": False,
        "proxy_headers": False,
        "server_header": False,
        "date_header": True,
        "backlog": 4096,
    }


# The line that says where the app's package was found (bench.procs reads it from the log).
SERVED_FROM = "bench.serve: app from"


def app_origin(app: str) -> Path | None:
    """The file the app's top-level package is imported from, found without importing it."""
    spec = importlib.util.find_spec(APPS[app].split(".", 1)[0].split(":", 1)[0])
    return Path(spec.origin).resolve() if spec is not None and spec.origin else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("app", choices=sorted(APPS))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--tree", type=Path, default=None, help="where the app's code must be")
    args = parser.parse_args()
    origin = app_origin(args.app)
    print(f"{SERVED_FROM} {origin}", file=sys.stderr, flush=True)
    if args.tree is not None and (origin is None or not origin.is_relative_to(args.tree.resolve())):
        sys.exit(f"bench.serve: {args.app} would run code from {origin}, not from {args.tree}")
    uvicorn.run(
        APPS[args.app],
        factory=True,
        host=args.host,
        port=args.port,
        **uvicorn_options(args.workers),  # type: ignore[arg-type]
    )


if __name__ == "__main__":
    main()
