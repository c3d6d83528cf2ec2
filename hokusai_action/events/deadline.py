"""One HTTP attempt, bounded in time and in what it reads, whatever the receiver does.

``requests``' timeout bounds each socket operation, not the attempt: a body that never ends, or a
head sent a byte at a time, would otherwise hold the relay (and its memory) for ever. Here an
``AttemptDeadline`` shuts the attempt's sockets once its time is up, and ``read_prefix`` reads at
most a given number of bytes of a body. Used by the webhook sink (``DeadlineAdapter`` on its session).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

# once an attempt's time is up, how often its connections are shut again (one may connect meanwhile)
DEADLINE_POLL_SECONDS = 0.05


def read_prefix(response: requests.Response, limit: int) -> tuple[bytes, bool]:
    """At most ``limit`` bytes of the body, and whether the body ended there. Never raises: a body cut
    short (by the receiver or by the attempt's deadline) gives what had arrived."""
    pieces: list[bytes] = []
    size = 0
    try:
        for piece in response.iter_content(chunk_size=1024):
            pieces.append(piece)
            size += len(piece)
            if size > limit:
                return b"".join(pieces)[:limit], False
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError):
        return b"".join(pieces)[:limit], False
    return b"".join(pieces), True


class AttemptTimedOut(requests.exceptions.Timeout):
    """The attempt's deadline passed before the receiver's answer (status and headers) was in."""


class AttemptDeadline:
    """End one attempt after ``seconds`` by shutting down the sockets it uses.

    ``requests``' timeout bounds each socket operation, so a receiver that sends a byte every few
    seconds keeps an attempt alive for ever. While a deadline is active on a thread, every connection
    that thread takes from the sink's pools is watched (``_WatchedHTTPPool``, ``_WatchedHTTPSPool``);
    once the time is up a watchdog thread shuts them down, which ends a blocked read at once (with an
    error the caller reads as a timeout: ``expired``), and keeps doing so for any connection opened
    after that, until the attempt ends.
    """

    _active = threading.local()

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._connections: list[Any] = []
        self._lock = threading.Lock()
        self._done = threading.Event()

    @classmethod
    def watch(cls, connection: Any) -> None:
        deadline: AttemptDeadline | None = getattr(cls._active, "deadline", None)
        if deadline is not None:
            with deadline._lock:
                deadline._connections.append(connection)

    def __enter__(self) -> AttemptDeadline:
        AttemptDeadline._active.deadline = self
        threading.Thread(target=self._watchdog, name="webhook-deadline", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        AttemptDeadline._active.deadline = None

    def _watchdog(self) -> None:
        if self._done.wait(self.seconds):
            return
        self.expired = True
        while True:
            with self._lock:
                connections = list(self._connections)
            for connection in connections:
                sock = getattr(connection, "sock", None)
                if sock is not None:
                    # the plain socket's shutdown, also under TLS: it reaches the descriptor the blocked
                    # read waits on, where SSLSocket.shutdown would first try to unwrap the session
                    with contextlib.suppress(OSError):
                        socket.socket.shutdown(sock, socket.SHUT_RDWR)
            if self._done.wait(DEADLINE_POLL_SECONDS):
                return


class _WatchedHTTPPool(HTTPConnectionPool):
    def _get_conn(self, timeout: float | None = None) -> Any:
        connection = super()._get_conn(timeout)
        AttemptDeadline.watch(connection)
        return connection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    def _get_conn(self, timeout: float | None = None) -> Any:
        connection = super()._get_conn(timeout)
        AttemptDeadline.watch(connection)
        return connection


_WATCHED_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class DeadlineAdapter(HTTPAdapter):
    """``requests``' adapter whose pools (direct, or through an HTTP proxy) report their connections
    to the attempt's ``AttemptDeadline``. A SOCKS proxy keeps its own pools: there only the socket
    timeout and the bounded read apply."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _WATCHED_POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if manager.pool_classes_by_scheme is urllib3.poolmanager.pool_classes_by_scheme:
            manager.pool_classes_by_scheme = _WATCHED_POOLS
        return manager
