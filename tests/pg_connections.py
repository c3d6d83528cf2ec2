"""Which process holds which PostgreSQL connection: pg_stat_activity rows of our application_name,
mapped to the client processes on this machine through /proc (the server sees only the client's
port; /proc/net/tcp turns that port into a socket inode, and /proc/PID/fd says who holds it).

Used by the connection-bound tests and `benchmarks/many_at_once.py`. Linux only, same machine only.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import sqlalchemy as sa

from hokusai_action.db.store import APPLICATION_NAME

_TCP_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")


def _inodes_by_local_port() -> dict[int, int]:
    found: dict[int, int] = {}
    for table in _TCP_TABLES:
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            port = int(fields[1].rsplit(":", 1)[1], 16)
            inode = int(fields[9])
            if inode:
                found[port] = inode
    return found


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:  # exited
        return inodes
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def connections_per_process(observer: sa.Connection, pids: Iterable[int], *, database: str | None = None) -> Counter:
    """{pid: open connections with our application_name (to ``database``, or any)} for the given
    client processes, now."""
    observer.execute(sa.text("SELECT pg_stat_clear_snapshot()"))
    ports = observer.execute(
        sa.text(
            "SELECT client_port FROM pg_stat_activity WHERE application_name = :name AND client_port > 0 "
            "AND (CAST(:database AS text) IS NULL OR datname = :database)"
        ),
        {"name": APPLICATION_NAME, "database": database},
    ).scalars()
    by_port = _inodes_by_local_port()
    inodes = {by_port[port] for port in ports if port in by_port}
    held = Counter()
    for pid in pids:
        count = len(_socket_inodes(pid) & inodes)
        if count:
            held[pid] = count
    return held


class ConnectionSampler:
    """Samples ``connections_per_process`` every ``period`` seconds in a thread; keeps each
    process's peak and the peak total."""

    def __init__(self, admin_url: str, period: float = 0.05, *, database: str | None = None) -> None:
        self._database = database
        self._engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        self._period = period
        self._pids: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-connection-sampler", daemon=True)
        self.peak: Counter = Counter()
        self.peak_total = 0
        self.samples = 0

    def watch(self, pid: int) -> None:
        with self._lock:
            self._pids.add(pid)

    def __enter__(self) -> ConnectionSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self._engine.dispose()

    def _run(self) -> None:
        with self._engine.connect() as observer:
            while not self._stop.is_set():
                with self._lock:
                    pids = list(self._pids)
                held = connections_per_process(observer, pids, database=self._database)
                for pid, count in held.items():
                    self.peak[pid] = max(self.peak[pid], count)
                self.peak_total = max(self.peak_total, sum(held.values()))
                self.samples += 1
                time.sleep(self._period)
