"""Where a worker's time goes under GET /v1/me load: py-spy samples the single uvicorn worker
while wrk sends /v1/me with fresh proofs, then the samples are summed per function.

    python -m bench.profile [--seconds 15] [--alg EdDSA|ES256] [--backend sqlite|postgresql]
                            [--mode cpu|gil|wall]

`cpu` samples running threads, `gil` the thread holding the GIL (the Python work the event loop
waits for), `wall` every thread, waiting ones too, with native frames (where threads sleep).

Prints the functions with the most samples of their own (self) and including what they call
(inclusive), and writes the raw samples (collapsed stacks, which flame graph scripts read)
to bench/results/.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench import deploy, wrk
from bench.devices import new_key, proof_pool
from bench.procs import ROOT
from bench.protected import login, write_pool

RESULTS = ROOT / "bench" / "results"


def summarize(raw: Path, limit: int = 25) -> str:
    """py-spy's raw (collapsed-stack) output -> the top functions, self and inclusive."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        total += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            inclusive[frame] += int(count)
    if not total:
        return "no samples"
    lines = [f"{total} samples", "", "self:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in own.most_common(limit)]
    lines += ["", "inclusive:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(limit)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--alg", default="EdDSA", choices=["EdDSA", "ES256"])
    parser.add_argument("--backend", default="sqlite", choices=list(deploy.BACKENDS))
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument(
        "--mode",
        default="cpu",
        choices=["cpu", "gil", "wall"],
        help="cpu: running threads only; gil: the thread holding the GIL; wall: every thread, "
        "waiting included, with native frames (shows where threads sleep)",
    )
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    RESULTS.mkdir(parents=True, exist_ok=True)
    work = RESULTS / "work" / "profile"
    raw = RESULTS / f"profile-{args.alg}-{args.backend}-{args.mode}.txt"
    key = new_key(args.alg)
    with deploy.splitlink(work, args.backend, workers=1) as server:
        token = login(server, key, deploy.mail_dir(server), "profile@example.com")["access_token"]
        url = server.env["SPLITLINK_PUBLIC_URL"] + "/v1/me"
        # Enough proofs for 4000 req/s: far above what the server answers today.
        pool = proof_pool(
            key, "GET", url, 4000 * (args.seconds + 2), access_token=token, iat=int(time.time())
        )
        pool_file = write_pool(work / "pool.txt", token, pool)
        result: list[wrk.WrkResult] = []
        load = threading.Thread(
            target=lambda: result.append(
                wrk.run(server, pool_file, seconds=args.seconds + 2, connections=args.connections)
            )
        )
        load.start()
        time.sleep(1)
        extra = {"cpu": [], "gil": ["--gil"], "wall": ["--idle", "--native"]}[args.mode]
        common = ["-p", str(server.process.pid), "-d", str(args.seconds), "-r", str(args.rate)]
        subprocess.run(
            [py_spy, "record", *common, *extra, "-f", "raw", "-o", str(raw)],
            check=True,
            capture_output=True,
        )
        load.join()
    print(summarize(raw))
    if result:
        measured = result[0]
        print(
            f"\nunder the profiler: {measured.rate:.0f} req/s, "
            f"{measured.server_cpu_us_per_request:.0f} us server CPU per request"
        )
    print(f"raw samples: {raw.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
