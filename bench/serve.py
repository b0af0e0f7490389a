"""One way to start every server the benchmarks compare, so that they differ only in the app.

    python -m bench.serve APP --port PORT [--workers N]

APP is one of `APPS` below.

uvicorn runs with uvloop and httptools, no access log, no server header and no proxy headers;
`splitlink` is the same factory `splitlink serve` runs. Each worker is a separate process whose
CPU time and RSS the harness reads from /proc.
"""

from __future__ import annotations

import argparse

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("app", choices=sorted(APPS))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    uvicorn.run(
        APPS[args.app],
        factory=True,
        host=args.host,
        port=args.port,
        **uvicorn_options(args.workers),  # type: ignore[arg-type]
    )


if __name__ == "__main__":
    main()
