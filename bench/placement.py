"""Which server worker holds each of the load generator's connections, read from /proc.

A server with several uvicorn workers shares one listening socket among them, and whichever
worker accepts first holds the connection for its whole keep-alive life. With the few long-lived
connections of a measurement, that lands unevenly and stays uneven: in 16 turns of 4
connections against 2 workers, one worker held all 4 in 7 turns (evenly drawn, that would happen
in 2 of 16), and in one turn of 64 connections one worker held 51. Where a measurement compares
latencies of servers turn by turn (growth), that placement, drawn anew each turn, adds its own
spread to theirs; there the load generator opens connections until every worker holds its share
(`Flow.spread`), as a load balancer in front of the workers would arrange it.

The login measurement keeps uvicorn's own placement: it measures how many logins the server
completes as deployed. Spread evenly there, the rate was lower, not higher, on SQLite (3
alternating pairs from 64 connections: 246, 229 and 337 logins/s against 263, 287 and 356): both
workers then write at once and wait for SQLite's single write lock more.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")
_ESTABLISHED = "01"


def _socket_inode(server_port: int, client_port: int) -> int | None:
    """The inode of the server's end of the TCP connection between the two ports."""
    for table in _TABLES:
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
                if (
                    state == _ESTABLISHED
                    and int(local.rsplit(":", 1)[1], 16) == server_port
                    and int(remote.rsplit(":", 1)[1], 16) == client_port
                ):
                    return int(inode)
    return None


def owning_worker(server_port: int, client_port: int, workers: list[int]) -> int | None:
    """The worker (of `workers`, by process id) that holds the server's end of the connection
    from `client_port`, or None if none of them does (not accepted yet, or already closed)."""
    inode = _socket_inode(server_port, client_port)
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in workers:
        fd_dir = f"/proc/{pid}/fd"
        with contextlib.suppress(OSError):
            for fd in os.listdir(fd_dir):
                with contextlib.suppress(OSError):
                    if os.readlink(f"{fd_dir}/{fd}") == target:
                        return pid
    return None
