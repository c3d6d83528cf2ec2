"""A loopback HTTP proxy in front of the real MLflow server that makes artifact uploads slow or silent.

Every request is forwarded as it came, except ``PUT .../mlflow-artifacts/artifacts/...`` (a model
file being uploaded):

- ``slow``: the proxy takes the whole body, then passes it on to MLflow at ``rate`` bytes/s and only
  then answers. This is what an MLflow server proxying to GCS does (it writes the body to a
  temporary file and uploads it to the bucket before it answers), and a buffering load balancer:
  the client has sent everything and hears nothing for ``size / rate`` seconds, then the answer.
- ``silent``: the proxy takes the whole body and never answers, until it is closed: a hung server.
- ``trickle``: the proxy reads the body at ``rate`` bytes/s through a small receive window, so the
  client's bytes keep moving, slowly, for ``size / rate`` seconds; then it answers at once: a slow
  but steady link. (With a large window the kernel's buffers take most of a small body at once and
  the client then waits in silence while the proxy drains them.)
- ``flaky``: the proxy takes the whole body and answers the first ``failures`` uploads with ``status``
  (and ``Retry-After: retry_after`` when given) without passing them on; later ones go through: an
  overloaded server or load balancer. An upload whose path ends with ``refuse`` is answered 400 at once.
- ``forward``: every request goes through unchanged (with ``tls``, a TLS front for the server). Named
  in ``HTTP_PROXY``, it is the client's HTTP proxy.

``tls`` (a server-side ``ssl.SSLContext``) makes the proxy speak HTTPS to the client: a TLS-terminating
load balancer, which may ask for a client certificate.

``uploads`` records each upload attempt: (path, bytes, seconds from the request to the answer, or
None when none was sent or the proxy answered it itself).
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ARTIFACT_PUT = "/mlflow-artifacts/artifacts/"
LOGIN_PATH = "/login"
LOGIN_PAGE = b"<html><body><form action='/login' method='post'>Sign in</form></body></html>"
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection", "host"}
SLICE = 16 * 1024
WINDOW = 32 * 1024


def origin_form(target: str) -> str:
    """``/path?query`` of a request target, also when a client sent it to us as its HTTP proxy
    (``http://host:port/path?query``, the absolute form)."""
    if target.startswith(("http://", "https://")):
        parts = http.client.urlsplit(target)
        return parts.path + (f"?{parts.query}" if parts.query else "")
    return target


class UploadProxy:
    def __init__(
        self,
        upstream_url: str,
        *,
        mode: str,
        rate: int = 1024 * 1024,
        failures: int = 0,
        status: int = 503,
        retry_after: str | None = None,
        refuse: str | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        assert mode in ("slow", "silent", "trickle", "login", "flaky", "forward")
        parsed = http.client.urlsplit(upstream_url)
        self.upstream = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self.mode = mode
        self.rate = rate
        self.failures = failures
        self.status = status
        self.retry_after = retry_after
        self.refuse = refuse
        self.uploads: list[tuple[str, int, float | None]] = []
        self.upload_times: list[float] = []  # time.monotonic() when each upload's request arrived
        self.upload_authorizations: list[str | None] = []  # each upload's Authorization header
        self.closing = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: Any) -> None:
                pass

            def setup(self) -> None:
                if isinstance(self.request, ssl.SSLSocket):
                    self.request.do_handshake()
                super().setup()

            def handle_one(self) -> None:
                started = time.monotonic()
                length = int(self.headers.get("Content-Length") or 0)
                upload = self.command == "PUT" and ARTIFACT_PUT in self.path
                if upload:
                    proxy.upload_times.append(started)
                    proxy.upload_authorizations.append(self.headers.get("Authorization"))
                if upload and proxy.mode == "trickle":
                    body = proxy.read_slowly(self.rfile, length)
                else:
                    body = self.rfile.read(length) if length else None
                if proxy.mode == "login" and (upload or self.path == LOGIN_PATH):
                    self.answer_login(upload, length)
                    return
                if upload and proxy.mode == "flaky" and proxy.refuse and self.path.endswith(proxy.refuse):
                    proxy.uploads.append((self.path, length, None))
                    self.send_response(400)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if upload and proxy.mode == "flaky" and proxy.take_failure():
                    proxy.uploads.append((self.path, length, None))
                    self.send_response(proxy.status)
                    if proxy.retry_after is not None:
                        self.send_header("Retry-After", proxy.retry_after)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if upload and proxy.mode == "silent":
                    proxy.uploads.append((self.path, length, None))
                    proxy.closing.wait()
                    self.close_connection = True
                    return
                status, headers, payload = proxy.forward(
                    self.command, origin_form(self.path), self.headers, body, throttle=upload and proxy.mode == "slow"
                )
                self.send_response(status)
                for key, value in headers:
                    if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                if upload:
                    proxy.uploads.append((self.path, length, time.monotonic() - started))

            def answer_login(self, upload: bool, length: int) -> None:
                if upload:
                    proxy.uploads.append((self.path, length, None))  # taken in, stored nowhere
                    self.send_response(302)
                    self.send_header("Location", proxy.url + LOGIN_PATH)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(LOGIN_PAGE)))
                self.end_headers()
                self.wfile.write(LOGIN_PAGE)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = handle_one

        class Server(ThreadingHTTPServer):
            def server_bind(self) -> None:
                if proxy.mode == "trickle":  # a small window: the client's bytes wait in its own socket
                    self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, WINDOW)
                super().server_bind()

        self._server = Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        if tls is not None:  # the handshake happens in each connection's own thread
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True, do_handshake_on_connect=False)
        self._lock = threading.Lock()
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, name="upload-proxy", daemon=True).start()

    def take_failure(self) -> bool:
        with self._lock:
            if self.failures <= 0:
                return False
            self.failures -= 1
            return True

    def read_slowly(self, stream: Any, length: int) -> bytes:
        chunks = []
        remaining = length
        while remaining:
            chunk = stream.read(min(SLICE, remaining))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
            time.sleep(len(chunk) / self.rate)
        return b"".join(chunks)

    def forward(self, method: str, path: str, headers: Any, body: bytes | None, *, throttle: bool):
        connection = http.client.HTTPConnection(*self.upstream, timeout=120)
        try:
            connection.putrequest(method, path, skip_accept_encoding=True)
            for key, value in headers.items():
                if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                    connection.putheader(key, value)
            if body is not None:
                connection.putheader("Content-Length", str(len(body)))
            connection.endheaders()
            if body:
                step = SLICE if throttle else len(body)
                for offset in range(0, len(body), step):
                    connection.send(body[offset : offset + step])
                    if throttle:
                        time.sleep(step / self.rate)
            response = connection.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            connection.close()

    def close(self) -> None:
        self.closing.set()
        self._server.shutdown()
        self._server.server_close()
