"""A lean HTTP/1.1 ``PUT`` of one file at a time over a kept-alive connection per upload thread.

Used by ``upload.py`` for MLflow's artifact proxy when no HTTP proxy stands in the way.
With 10,000 files of 10 KiB the client's CPU per request competes with the server's two workers for
the machine's two cores: measured (``benchmarks/upload_cpu.py``), ``requests`` + ``urllib3`` cost the
client ~1.0 ms of CPU per ``PUT`` (request preparation, hooks, header merging, cookie jars, ``Retry``
and response objects), ``urllib3`` alone ~0.45 ms, this ~0.25 ms, file reading and hashing included.

It keeps what MLflow's ``http_request`` gives an upload (``mlflow/utils/rest_utils.py``, MLflow 3.17):

- the retry policy: the caller's ``urllib3.util.Retry`` (the one MLflow builds), consulted only when a
  request fails, so its counts, backoff, jitter and ``Retry-After`` handling are urllib3's own; the body
  starts over (``HashingReader.seek(0)``) on a fresh connection;
- TLS: urllib3's default context (``create_urllib3_context``) with the CA bundle (file or folder) or
  no verification, and the client certificate, as ``requests`` would load them;
- the timeout: one socket timeout for the connect and for each read, as ``requests`` applies it;
- credentials: MLflow's headers, and basic auth from user-info in the URL, which ``requests`` sends
  in place of any other ``Authorization``;
- no redirect is ever followed: the caller gets the 3xx and its ``Location``.

Only a direct connection is made here; behind an HTTP proxy ``upload.py`` keeps ``requests``.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import re
import select
import socket
import ssl
import threading
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import unquote, urlsplit

from urllib3.exceptions import MaxRetryError

from hokusai_action.digest.streamed import HashingReader

# a body this small goes out in the same send as the request head: one syscall, one TCP segment
COALESCE_LIMIT = 64 * 1024
# a path of these characters is sent as it is; any other goes through requests' ``requote_uri``
_PLAIN_PATH = re.compile(r"[A-Za-z0-9._~/-]*")


class Answer(NamedTuple):
    """What the server answered to one ``PUT``: enough to tell stored, redirected or refused apart."""

    status: int
    reason: str
    location: str | None
    text: str


class PutFailed(ConnectionError):
    """Every attempt of a ``PUT`` failed before an answer came (an ``OSError``, as ``requests``' are)."""


class AnswerError(OSError):
    """The server answered 4xx/5xx (with MLflow's retries spent): worded as ``requests``' ``raise_for_status``."""

    def __init__(self, url: str, answer: Answer) -> None:
        kind = "Client" if answer.status < 500 else "Server"
        message = f"{answer.status} {kind} Error: {answer.reason} for url: {url}"
        if answer.text:
            message += f". Response text: {answer.text}"
        super().__init__(message)
        self.status = answer.status


@dataclass(frozen=True)
class Target:
    """Where and how to connect, worked out once per upload."""

    scheme: str  # http or https
    host: str
    port: int
    base_path: str  # the artifact URI's path
    host_header: str
    headers: bytes  # every constant header line, CRLF-terminated
    tls: ssl.SSLContext | None
    socket_options: tuple[tuple[int, int, int], ...]


def make_target(
    url: str,
    headers: dict[str, str],
    *,
    verify: bool | str = True,
    default_ca_bundle: str | None = None,
    client_cert: str | tuple[str, str] | None = None,
    socket_options: list[tuple[int, int, int]] | tuple[tuple[int, int, int], ...] = (),
) -> Target:
    """The connection settings for ``url``; raises ``ValueError`` on a header that cannot be sent."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"not an http(s) URL: {parts.scheme}")
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host_header = host if ":" not in host else f"[{host}]"
    if parts.port:
        host_header += f":{parts.port}"
    headers = {"Host": host_header, **headers, "Accept-Encoding": "identity"}
    if parts.username or parts.password:  # as requests does: the URL's user-info wins (``prepare_auth``)
        pair = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}".encode("latin-1")
        headers = {name: value for name, value in headers.items() if name.lower() != "authorization"}
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
    lines = []
    for name, value in headers.items():
        if any(char in f"{name}{value}" for char in "\r\n\0") or not name:
            raise ValueError(f"header {name!r} holds a line break")  # as requests' check_header_validity
        lines.append(f"{name}: {value}\r\n".encode("latin-1"))
    tls = _tls_context(verify, default_ca_bundle, client_cert) if parts.scheme == "https" else None
    return Target(
        scheme=parts.scheme,
        host=host,
        port=port,
        base_path=parts.path.rstrip("/"),
        host_header=host_header,
        headers=b"".join(lines),
        tls=tls,
        socket_options=tuple(socket_options),
    )


def _tls_context(
    verify: bool | str, default_ca_bundle: str | None, client_cert: str | tuple[str, str] | None
) -> ssl.SSLContext:
    """The context urllib3 would build for ``requests``' ``verify`` and ``cert`` (``HTTPAdapter.cert_verify``)."""
    import os

    from urllib3.util.ssl_ import create_urllib3_context

    context = create_urllib3_context()
    if verify is False:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        bundle = verify if isinstance(verify, str) else default_ca_bundle
        if bundle and os.path.isdir(bundle):
            context.load_verify_locations(capath=bundle)
        elif bundle:
            context.load_verify_locations(cafile=bundle)
        else:
            context.load_default_certs()
        context.check_hostname = True
    if isinstance(client_cert, str):
        context.load_cert_chain(client_cert)
    elif client_cert:
        context.load_cert_chain(*client_cert)
    return context


class PutClient:
    """``put(endpoint, reader, content_type, timeout)`` from any number of threads, each on its own connection."""

    def __init__(self, target: Target, retry: Any) -> None:
        self.target = target
        self._retry = retry  # a urllib3 Retry: immutable, each failure gives a new one
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()

    def url_for(self, endpoint: str) -> str:
        return f"{self.target.scheme}://{self.target.host_header}{self.path_for(endpoint)}"

    def path_for(self, endpoint: str) -> str:
        """The request target ``requests`` sends for the artifact URI + ``endpoint``: re-quoted by
        ``requote_uri``, its fragment dropped. (MLflow's client and server do not round-trip names that
        hold '?', '#' or '%XX'; sending them as MLflow does stores them where MLflow stores them.)"""
        path = self.target.base_path + endpoint
        if _PLAIN_PATH.fullmatch(path):
            return path
        from requests.utils import requote_uri

        return requote_uri(path).split("#", 1)[0]

    def put(self, endpoint: str, reader: HashingReader, content_type: str, timeout: float) -> Answer:
        """Send ``reader`` to ``endpoint``; the answer once it is not retried any more (2xx, 3xx or an
        error status past MLflow's retries). Raises ``PutFailed`` once the retries of failures are spent."""
        path = self.path_for(endpoint)
        head = (
            f"PUT {path} HTTP/1.1\r\n".encode("latin-1", "strict")
            + self.target.headers
            + f"Content-Type: {content_type}\r\nContent-Length: {len(reader)}\r\n\r\n".encode("latin-1")
        )
        retry = self._retry
        while True:
            try:
                answer, headers = self._exchange(head, reader, timeout)
            except (OSError, http.client.HTTPException) as exc:  # urllib3 retries each of these
                retry = self._next(retry, path, error=exc)
                _pause(retry, reader, cap=timeout)
            else:
                if answer.status < 400 or not retry.is_retry("PUT", answer.status, bool(headers.get("Retry-After"))):
                    return answer
                response = _as_urllib3(answer, headers)
                try:
                    retry = retry.increment("PUT", path, response=response)
                except MaxRetryError:  # MLflow turns raise_on_status off: the last answer stands
                    return answer
                _pause(retry, reader, cap=timeout, response=response)
            reader.seek(0)

    def _next(self, retry: Any, path: str, *, error: BaseException) -> Any:
        """The retry after ``error``; ``PutFailed`` when none is left."""
        try:
            return retry.increment("PUT", path, error=error)
        except MaxRetryError:
            attempts = len(retry.history) + 1
            url = f"{self.target.scheme}://{self.target.host_header}{path}"
            raise PutFailed(f"PUT {url} failed ({attempts} attempt{'s' if attempts > 1 else ''}): {error!r}") from error

    def _exchange(self, head: bytes, reader: HashingReader, timeout: float) -> tuple[Answer, Any]:
        sock = self._connection(timeout)
        try:
            # the server may have answered before taking the whole body (413, a proxy's error page): read it
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self._send(sock, head, reader)
            response = http.client.HTTPResponse(sock, method="PUT")
            try:
                response.begin()
                body = response.read()
            finally:
                response.close()
        except BaseException:
            self._drop(sock)
            raise
        if response.will_close:
            self._drop(sock)
        text = body.decode("utf-8", "replace") if body else ""
        answer = Answer(response.status, response.reason, response.getheader("Location"), text)
        return answer, response.headers

    @staticmethod
    def _send(sock: socket.socket, head: bytes, reader: HashingReader) -> None:
        if len(reader) <= COALESCE_LIMIT:
            block = reader.take_block()
            sock.sendall(head + block if block else head)
        else:
            sock.sendall(head)
        while block := reader.take_block():
            sock.sendall(block)

    def _connection(self, timeout: float) -> socket.socket:
        sock = getattr(self._local, "sock", None)
        if sock is not None:
            # an idle kept-alive connection with something to read was closed by the server (or sent junk);
            # poll, not select: select fails on descriptors past 1023
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            if poller.poll(0):
                self._drop(sock)
                sock = None
            elif sock.gettimeout() != timeout:
                sock.settimeout(timeout)
        if sock is None:
            sock = self._connect(timeout)
        return sock

    def _connect(self, timeout: float) -> socket.socket:
        target = self.target
        sock = socket.create_connection((target.host, target.port), timeout=timeout)
        try:
            for option in target.socket_options:
                sock.setsockopt(*option)
            if target.tls is not None:
                sock = target.tls.wrap_socket(sock, server_hostname=target.host)
        except BaseException:
            sock.close()
            raise
        self._local.sock = sock
        with self._lock:
            self._open.add(sock)
        return sock

    def _drop(self, sock: socket.socket) -> None:
        if getattr(self._local, "sock", None) is sock:
            self._local.sock = None
        with self._lock:
            self._open.discard(sock)
        sock.close()

    def close(self) -> None:
        """Close every connection (of every thread)."""
        with self._lock:
            socks, self._open = list(self._open), set()
        for sock in socks:
            sock.close()


def _pause(retry: Any, reader: HashingReader, *, cap: float, response: Any = None) -> None:
    """Wait before the next attempt as urllib3's ``Retry.sleep`` would, with three differences.

    - A ``Retry-After`` that does not parse is no instruction: the plain backoff applies, as with no
      header (urllib3 raises ``InvalidHeader``, which is no outage and no bug of ours).
    - The wait is at most ``cap``, the request's own timeout: a server asking for longer (urllib3
      honours up to 6 hours) is as good as down, and MLflow's retries then end the run with exit 4.
    - It ends at once when the upload is stopped (another file failed, SIGTERM): ``UploadStopped``.
    """
    from urllib3.exceptions import InvalidHeader

    delay = None
    if response is not None and retry.respect_retry_after_header:
        with contextlib.suppress(InvalidHeader):
            delay = retry.get_retry_after(response)
    if not delay:  # as urllib3: no header (or 0) means the backoff
        delay = retry.get_backoff_time()
    reader.pause(min(max(delay, 0.0), cap))


def _as_urllib3(answer: Answer, headers: Any) -> Any:
    """The answer as the urllib3 response a ``Retry`` reads (status, ``Retry-After``): only on a retry."""
    from urllib3.response import HTTPResponse

    return HTTPResponse(body=b"", headers=dict(headers.items()), status=answer.status, preload_content=False)
