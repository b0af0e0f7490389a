"""SQLite's write-ahead log, kept out of the event loop: the fsync that makes commits durable
(`WalSync`) and the checkpoints that copy the log into the database file and keep it small
(`Checkpointer`), each from a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from collections.abc import Callable
from typing import Literal

from server.errors import TemporarilyUnavailable
from server.storage.transactions import T

SQLITE_CHECKPOINT_INTERVAL = 0.5
# The write-ahead log is started over once it holds this much (see `Checkpointer`).
SQLITE_WAL_LIMIT_BYTES = 32 * 1024 * 1024
# A log file larger than this is cut back to it when the log starts over. Not to the limit above:
# under steady writes the file grows past that limit before a round starts it over, and cutting
# it back every time would make every writer pay for growing it again.
SQLITE_WAL_FILE_BYTES = 4 * SQLITE_WAL_LIMIT_BYTES
# How long a restart of the log may wait for the writer and the readers before it gives up until
# the next round; writers wait for it meanwhile.
SQLITE_WAL_RESTART_WAIT_MS = 50

logger = logging.getLogger("splitlink.storage")


def open_with_wait(path: str, *, busy_timeout: float) -> sqlite3.Connection:
    """A connection that has read the schema, waiting for the database up to `busy_timeout`.
    After a crash, the first process to open the database rebuilds the log's index, holding it
    meanwhile; a worker starting alongside (the supervisor starts both at once) must wait for
    that instead of failing its startup, which makes uvicorn stop every worker."""
    conn = sqlite3.connect(
        path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
    )
    conn.execute("PRAGMA schema_version").fetchone()
    return conn


async def in_thread_to_the_end(call: Callable[[], T]) -> T:
    """Run `call` in a thread and wait for it to finish even if the waiting task is cancelled
    meanwhile (the cancellation is passed on afterwards): a connection must never be used by
    the loop while a thread still uses it."""
    future = asyncio.get_running_loop().run_in_executor(None, call)
    cancelled = False
    while not future.done():
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            # Also when the thread finished just before: its outcome is dropped, and the
            # cancellation passed on. Dropping it instead would leave a task that was told to
            # stop running on (a checkpointer that never stopped hung the server's shutdown).
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return future.result()


class WalSync:
    """Makes committed transactions durable after SQLite's write lock is released: one fsync of
    the write-ahead log, in a thread, covers every commit made before it started (group
    commit). The log is append-only, so a transaction that read another's writes commits after
    it in the log, and the fsync that makes it durable makes the other durable too: what a
    caller is told has committed survives a power failure, as with synchronous=FULL, while the
    next writer already runs (docs/design.md §5). The log's inode stays the same while this
    process keeps its connections open (SQLite deletes the file only when the last connection
    to the database closes), so one descriptor serves the process's lifetime.

    After a failed fsync the kernel may have dropped the pages it could not write, and a later
    fsync can succeed without them: the failure is permanent for this process, which refuses
    durable writes from then on (PostgreSQL stops for the same reason)."""

    def __init__(self, wal_path: str) -> None:
        self._wal_path = wal_path
        self._fd: int | None = None
        self._waiting: asyncio.Future[None] | None = None
        self._syncing: asyncio.Task[None] | None = None
        self.failed: OSError | None = None

    async def after_commit(self) -> None:
        """Return once an fsync that started after this call has finished."""
        loop = asyncio.get_running_loop()
        if self._waiting is None:
            self._waiting = loop.create_future()
            if self._syncing is None:
                self._syncing = loop.create_task(self._sync_while_waited_for())
        # A cancelled caller leaves the fsync running for the others.
        await asyncio.shield(self._waiting)

    async def _sync_while_waited_for(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._waiting is not None:
                # Every caller in this group committed before the fsync below starts.
                group, self._waiting = self._waiting, None
                try:
                    if self.failed is not None:
                        raise self.failed
                    if self._fd is None:
                        self._fd = os.open(self._wal_path, os.O_RDONLY | os.O_CLOEXEC)
                    await loop.run_in_executor(None, os.fsync, self._fd)
                except OSError as exc:
                    if self.failed is None:
                        logger.critical("sqlite: fsync of the log failed, writes refused: %s", exc)
                    self.failed = exc
                    group.set_exception(TemporarilyUnavailable("the database cannot write"))
                    group.exception()  # retrieved here too: no warning if nobody waits
                else:
                    group.set_result(None)
        finally:
            self._syncing = None

    async def close(self) -> None:
        if self._syncing is not None:
            await asyncio.shield(self._syncing)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Checkpointer:
    """Copies the write-ahead log into the database file from a thread, every `interval`
    seconds. The in-loop connections never checkpoint (an fsync of the database file would
    stall the loop), and without checkpoints the log grows without bound and every read slows
    down with it.

    A PASSIVE checkpoint never waits for readers or writers; several processes may run it. But
    it alone does not keep the log small: SQLite writes from the start of the log again only
    when a writer finds every page of it copied, and under steady writes new pages always
    arrive while the copy runs, so the log would grow for as long as the load lasts. So once the
    log holds SQLITE_WAL_LIMIT_BYTES, the round ends with a RESTART checkpoint: it copies the
    few pages that came in meanwhile while writers wait, so the next writer starts the log over
    and, if the file has grown past SQLITE_WAL_FILE_BYTES, cuts it back. It runs holding
    `writer`, so that this process's writers queue for it on the loop instead of polling for
    SQLite's lock, and it never waits for one of them."""

    def __init__(
        self, path: str, *, interval: float, writer: asyncio.Lock, busy_timeout: float
    ) -> None:
        self._path = path
        self._interval = interval
        self._writer = writer
        self._busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._restart_pages = 0

    def start(self) -> None:
        self._conn = open_with_wait(self._path, busy_timeout=self._busy_timeout)
        # Only RESTART waits (a PASSIVE checkpoint never calls the busy handler).
        self._conn.execute(f"PRAGMA busy_timeout = {SQLITE_WAL_RESTART_WAIT_MS}")
        self._conn.execute("PRAGMA synchronous = FULL")
        (page_size,) = self._conn.execute("PRAGMA page_size").fetchone()
        self._restart_pages = SQLITE_WAL_LIMIT_BYTES // page_size
        self._task = asyncio.get_running_loop().create_task(self._run())

    def checkpoint(self, mode: Literal["PASSIVE", "RESTART"] = "PASSIVE") -> int:
        """The number of pages in the log. A RESTART that finds another process's writer or a
        reader still busy after SQLITE_WAL_RESTART_WAIT_MS gives up until the next round."""
        if self._conn is None:
            return 0
        (_, log_pages, _) = self._conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        return int(log_pages)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                # Waits for a checkpoint in progress even when stopped, so that `stop` never
                # closes the connection under the thread that is using it.
                if await in_thread_to_the_end(self.checkpoint) >= self._restart_pages:
                    async with self._writer:
                        await in_thread_to_the_end(lambda: self.checkpoint("RESTART"))
            except sqlite3.Error as exc:  # busy, or the disk: the next round tries again
                logger.debug("sqlite checkpoint skipped: %s", exc)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
