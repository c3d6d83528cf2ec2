"""A loopback HTTP receiver on a raw socket, for answers no well-behaved server library sends: a body
that never ends, or a head or body trickled a byte at a time (to show that a client's per-read
timeout is no bound on the whole answer).

Each connection reads one request (its head and its ``Content-Length`` body), then sends what the
scripted answer yields, piece by piece, pausing ``pause`` seconds between pieces, until the answer
ends, the client goes away, or the receiver is closed. ``sent`` counts the bytes that left.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import ssl
import threading
from collections.abc import Callable, Iterable, Iterator

Answer = Callable[[], Iterable[bytes]]

MIB = 1024 * 1024


def endless_chunked(status: str = "200 OK", *, piece: bytes = b"x" * 65536, limit: int = 256 * MIB) -> Answer:
    """A chunked answer whose body goes on (for ``limit`` bytes: a client that reads it all still ends)."""

    def answer() -> Iterator[bytes]:
        yield f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        frame = b"%x\r\n%s\r\n" % (len(piece), piece)
        yield from itertools.repeat(frame, limit // len(piece))
        yield b"0\r\n\r\n"

    return answer


def trickled(head: bytes, *, then: bytes = b"x", count: int = 100_000) -> Answer:
    """``head`` at once, then ``then`` sent ``count`` times (one piece per pause of the receiver)."""

    def answer() -> Iterator[bytes]:
        yield head
        yield from itertools.repeat(then, count)

    return answer


class RawReceiver:
    def __init__(self, answer: Answer, *, pause: float = 0.0, tls: ssl.SSLContext | None = None) -> None:
        self.answer = answer
        self.pause = pause
        self.requests = 0
        self.sent = 0
        self._tls = tls
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._threads: list[threading.Thread] = []
        accepting = threading.Thread(target=self._accept, name="raw-receiver", daemon=True)
        accepting.start()
        self._threads.append(accepting)

    @property
    def url(self) -> str:
        scheme = "https" if self._tls else "http"
        return f"{scheme}://127.0.0.1:{self._listener.getsockname()[1]}/hook"

    def close(self) -> None:
        self._closing.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for thread in self._threads:
            thread.join(10)

    def __enter__(self) -> RawReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            worker = threading.Thread(target=self._serve, args=(connection,), daemon=True)
            worker.start()
            self._threads.append(worker)

    def _serve(self, connection: socket.socket) -> None:
        try:
            if self._tls is not None:
                connection = self._tls.wrap_socket(connection, server_side=True)
            connection.settimeout(10)
            self._read_request(connection)
            with self._lock:
                self.requests += 1
            for piece in self.answer():
                if self._closing.wait(self.pause) if self.pause else self._closing.is_set():
                    return
                connection.sendall(piece)
                with self._lock:
                    self.sent += len(piece)
        except (OSError, ssl.SSLError):
            return  # the client went away: what a receiver sees when the sink stops reading
        finally:
            connection.close()

    @staticmethod
    def _read_request(connection: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            piece = connection.recv(65536)
            if not piece:
                raise ConnectionError("the client closed before its request ended")
            data += piece
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            piece = connection.recv(65536)
            if not piece:
                raise ConnectionError("the client closed before its body ended")
            body += piece
