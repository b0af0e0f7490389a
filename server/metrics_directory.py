"""The directory where the worker processes of one `splitlink serve` keep their metrics
(prometheus-client's multiprocess mode, server/metrics.py).

Each `splitlink serve` makes a fresh one under `data_dir/metrics/`, so that two servers sharing
a data directory never add up each other's counts, and removes it when it stops. One left behind
by a server that was killed is removed by the next start: every server holds a lock on its own
directory for as long as it runs, and the kernel releases it when the process dies.

This module must not import prometheus-client (server/metrics.py says why).
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

# prometheus-client's variable, read by every worker process.
MULTIPROCESS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
METRICS_SUBDIRECTORY = "metrics"
_LOCK_FILE = "serving.lock"


@contextlib.contextmanager
def metrics_directory(data_dir: Path) -> Iterator[Path]:
    """A new, empty directory for this server's metrics, removed when the block ends."""
    parent = Path(data_dir) / METRICS_SUBDIRECTORY
    parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(parent)
    path = Path(tempfile.mkdtemp(prefix="serve-", dir=parent))
    try:
        with (path / _LOCK_FILE).open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _remove_abandoned(parent: Path) -> None:
    """Remove the directories of servers that no longer run: those whose lock is free."""
    for candidate in parent.glob("serve-*"):
        lock_path = candidate / _LOCK_FILE
        if not lock_path.is_file():
            # Made by a server that has not taken its lock yet, or not by a server at all.
            continue
        with lock_path.open("a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            shutil.rmtree(candidate, ignore_errors=True)
