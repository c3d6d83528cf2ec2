"""Fault-test helpers: a run stopped at a failpoint, proxies we can break, and ONE invariant checker.

- ``run_to_failpoint``: the CLI as a subprocess with ``HOKUSAI_FAILPOINT`` set; it reports whether
  the run really reached the failpoint (the line ``hokusai failpoint NAME: ACTION`` on stderr) and can
  act at that moment (break a service while the run sleeps there).
- ``TcpProxy``: a loopback TCP forwarder that can cut every live connection and refuse new ones.
- ``DroppingHttpProxy``: an HTTP forwarder that sends ``POST .../model-versions/create`` upstream and
  then closes the client's connection without an answer, a given number of times.
- ``WebhookReceiver``: records every POST and checks its Standard Webhooks signature.
- ``check_invariants``: the end state every fault case must reach; ``FaultTally`` adds up the figures.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from hokusai_action.failpoints import ENV as FAILPOINT_ENV

FAILPOINT_LINE = "hokusai failpoint "
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"hokusai-fault-matrix-signing-32b").decode()
TAG_DIGEST = "hokusai.artifact_digest"


# ------------------------------------------------------------------------------ failpoint runs


@dataclass
class FaultRun:
    code: int
    stdout: str
    stderr: str
    reached: bool

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)


def run_to_failpoint(
    command: list[str],
    *,
    env: dict[str, str],
    cwd: Path,
    failpoint: str,
    at_failpoint: Callable[[], None] | None = None,
    timeout: float = 300,
) -> FaultRun:
    """Run ``command`` with ``failpoint`` armed; call ``at_failpoint`` once, when it is first reached."""
    process = subprocess.Popen(
        command,
        env={**env, FAILPOINT_ENV: failpoint},
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    reached = threading.Event()
    err_lines: list[str] = []
    out: list[str] = []

    def read_stderr() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            err_lines.append(line)
            if line.startswith(FAILPOINT_LINE):
                reached.set()

    def read_stdout() -> None:
        assert process.stdout is not None
        out.append(process.stdout.read())

    readers = [threading.Thread(target=read_stderr, daemon=True), threading.Thread(target=read_stdout, daemon=True)]
    for reader in readers:
        reader.start()
    try:
        deadline = time.monotonic() + timeout
        while not reached.wait(0.05) and process.poll() is None and time.monotonic() < deadline:
            pass
        if reached.is_set() and at_failpoint is not None:
            at_failpoint()
        code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    for reader in readers:
        reader.join(timeout=10)
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()
    return FaultRun(code, "".join(out), "".join(err_lines), reached.is_set())


# ------------------------------------------------------------------------------------ proxies


class TcpProxy:
    """Forwards loopback TCP connections to ``upstream``; ``cut()`` breaks them, ``restore()`` heals."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self.refusing = False
        self.cuts = 0
        self.refused = 0
        self._closed = False
        threading.Thread(target=self._accept, name="tcp-proxy", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.refusing:
                self.refused += 1
                client.close()
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._sockets.update((client, server))
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                target.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                self._drop(sock)

    def _drop(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def cut(self, *, refuse: bool = True) -> int:
        """Close every live connection (both ends); with ``refuse`` also turn new ones away."""
        self.refusing = refuse
        with self._lock:
            live = list(self._sockets)
        for sock in live:
            self._drop(sock)
        self.cuts += 1
        return len(live) // 2

    def restore(self) -> None:
        self.refusing = False

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.cut()


_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade", "te", "trailer"}


class DroppingHttpProxy:
    """An HTTP forwarder in front of MLflow that loses the answer to ``model-versions/create``.

    The request reaches MLflow (the version is created), then the client's connection is closed
    without a response: what a load balancer timing out or a dropped connection looks like.
    """

    CREATE_PATH = "/model-versions/create"

    def __init__(self, upstream_url: str, *, drops: int = 1) -> None:
        parsed = http.client.urlsplit(upstream_url)
        self.upstream = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self.drops_left = drops
        self.dropped = 0
        self.creates_forwarded = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: Any) -> None:  # keep pytest's output clean
                pass

            def _forward(self) -> None:
                body = self._body()
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                if body is not None:
                    headers["Content-Length"] = str(len(body))
                connection = http.client.HTTPConnection(*proxy.upstream, timeout=120)
                try:
                    connection.request(self.command, self.path, body=body, headers=headers)
                    response = connection.getresponse()
                    payload = response.read()
                finally:
                    connection.close()
                is_create = self.command == "POST" and self.path.split("?")[0].endswith(proxy.CREATE_PATH)
                if is_create:
                    proxy.creates_forwarded += 1
                    if proxy.drops_left > 0 and response.status == 200:
                        proxy.drops_left -= 1
                        proxy.dropped += 1
                        self.close_connection = True  # MLflow committed the version; the client hears nothing
                        return
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _body(self) -> bytes | None:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else (b"" if self.command in ("POST", "PUT") else None)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, name="http-proxy", daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# ----------------------------------------------------------------------------------- webhook


class WebhookReceiver:
    """Records every POST to ``path`` on pytest-httpserver and answers 200."""

    def __init__(self, httpserver: Any, path: str = "/hook") -> None:
        from werkzeug import Request, Response

        self.requests: list[tuple[dict[str, str], bytes]] = []
        self._lock = threading.Lock()

        def handle(request: Request) -> Response:
            with self._lock:
                self.requests.append(({k.lower(): v for k, v in request.headers.items()}, request.get_data()))
            return Response("ok", status=200)

        httpserver.expect_request(path, method="POST").respond_with_handler(handle)
        self.url = httpserver.url_for(path)

    def event_ids(self) -> list[str]:
        """The id of every delivery, after checking its signature (raises on a bad one)."""
        from standardwebhooks import Webhook

        verifier = Webhook(WEBHOOK_SECRET)
        ids = []
        with self._lock:
            received = list(self.requests)
        for headers, body in received:
            verifier.verify(body, headers)
            event = json.loads(body)
            if headers["webhook-id"] != event["id"]:
                raise AssertionError(f"webhook-id {headers['webhook-id']} differs from the event id {event['id']}")
            ids.append(event["id"])
        return ids


# -------------------------------------------------------------------------------- invariants


@dataclass
class PubSubProbe:
    """Everything pulled from one subscription, as ``(ordering key = token id, ce-id)`` pairs."""

    emulator: Any
    subscription: str
    received: list[tuple[str, str]] = field(default_factory=list)

    def _pull(self, count: int, timeout: float) -> int:
        messages = self.emulator.pull(self.subscription, count, timeout)
        self.received += [(m.ordering_key, m.attributes["ce-id"]) for m in messages]
        return len(messages)

    def drain(self, token_id: str, *, wait_first: float) -> list[str]:
        """The ids received for ``token_id`` (waiting up to ``wait_first`` s for a first one)."""
        deadline = time.monotonic() + wait_first
        while not self.ids_for(token_id) and time.monotonic() < deadline:
            self._pull(1, max(0.1, deadline - time.monotonic()))
        while self._pull(10, 1.0):
            pass
        return self.ids_for(token_id)

    def ids_for(self, token_id: str) -> list[str]:
        return [event_id for key, event_id in self.received if key == token_id]


@dataclass
class Verdict:
    token_id: str
    problems: list[str]
    versions_duplicated: int
    events_lost: int
    event_id: str | None


def other_tokens_state(database: Any, *token_ids: str) -> tuple[Any, ...]:
    """Every row that belongs to none of ``token_ids``: tokens, events and their deliveries."""
    from hokusai_action.db.schema import event_deliveries, events, tokens

    with database.unit_of_work() as uow:
        token_rows = uow.execute(sa.select(tokens).where(tokens.c.token_id.not_in(token_ids))).all()
        event_rows = uow.execute(
            sa.select(events.c.event_id, events.c.token_id).where(events.c.token_id.not_in(token_ids))
        ).all()
        delivery_rows = uow.execute(
            sa.select(event_deliveries)
            .join(events, events.c.event_id == event_deliveries.c.event_id)
            .where(events.c.token_id.not_in(token_ids))
        ).all()
    return (
        tuple(sorted(tuple(map(str, row)) for row in token_rows)),
        tuple(sorted(tuple(map(str, row)) for row in event_rows)),
        tuple(sorted(tuple(map(str, row)) for row in delivery_rows)),
    )


def check_invariants(
    *,
    database: Any,
    mlflow_client: Any,
    token_id: str,
    digest: str,
    others_before: tuple[Any, ...],
    webhook: WebhookReceiver | None = None,
    pubsub: PubSubProbe | None = None,
    others_excluded: tuple[str, ...] = (),
) -> Verdict:
    """The end state every fault case must converge to; returns every broken promise, not just the first.

    One MLflow version carrying the digest tag (and no other version of the token's model); the token
    ``registered`` with that run id and version and no claim left; one event row, delivered to every
    sink, whose id is the id each receiver got (at least once, never another id); nothing changed for
    any other token.
    """
    from hokusai_action.db.outbox import delivery_status
    from hokusai_action.db.schema import events
    from hokusai_action.db.store import get_token
    from hokusai_action.domain.tags import model_name_for

    problems: list[str] = []
    model_name = model_name_for(token_id)
    tagged = list(mlflow_client.search_model_versions(f"tags.`{TAG_DIGEST}` = '{digest}'"))
    every = list(mlflow_client.search_model_versions(f"name = '{model_name}'"))
    duplicated = max(0, len(tagged) - 1) + max(0, len(every) - len(tagged))
    if len(tagged) != 1 or len(every) != 1 or tagged[0].name != model_name:
        problems.append(
            f"MLflow: {len(tagged)} version(s) tagged with the digest, {len(every)} version(s) of {model_name}"
        )
    version = tagged[0] if tagged else None

    with database.unit_of_work() as uow:
        token = get_token(uow, token_id)
        event_rows = uow.execute(sa.select(events).where(events.c.token_id == token_id)).all()
        delivered = delivery_status(uow, event_rows[0].event_id) if len(event_rows) == 1 else {}
    row = token.as_dict() if token else {}
    if row.get("model_status") != "registered":
        problems.append(f"token status is {row.get('model_status')!r}, not 'registered'")
    if row.get("claim_owner") is not None:
        problems.append(f"a claim is left: {row.get('claim_owner')}")
    if row.get("artifact_digest") != digest:
        problems.append(f"token digest {row.get('artifact_digest')} is not {digest}")
    if version is not None and (row.get("mlflow_run_id"), row.get("model_version")) != (
        version.run_id,
        str(version.version),
    ):
        problems.append(
            f"token says run {row.get('mlflow_run_id')} version {row.get('model_version')}, "
            f"MLflow says run {version.run_id} version {version.version}"
        )

    lost = 0
    event_id = str(event_rows[0].event_id) if len(event_rows) == 1 else None
    if event_id is None:
        problems.append(f"{len(event_rows)} event rows for the token, not 1")
        lost += 1
    else:
        pending = sorted(sink for sink, done in delivered.items() if not done)
        if pending:
            problems.append(f"deliveries not marked delivered: {pending}")
    for sink, ids in (
        ("webhook", webhook.event_ids() if webhook else None),
        ("pubsub", pubsub.drain(token_id, wait_first=10) if pubsub else None),
    ):
        if ids is None:
            continue
        if event_id is not None and event_id not in ids:
            lost += 1
            problems.append(f"{sink} never received event {event_id} (got {ids})")
        if len(set(ids)) > 1:
            problems.append(f"{sink} received different event ids: {sorted(set(ids))}")

    if other_tokens_state(database, token_id, *others_excluded) != others_before:
        problems.append("rows of other tokens changed")
    return Verdict(token_id, problems, duplicated, lost, event_id)


@dataclass
class FaultTally:
    """The figures the README quotes, added up over one pytest session."""

    injected: int = 0
    converged: int = 0
    versions_duplicated: int = 0
    events_lost: int = 0
    cases: list[str] = field(default_factory=list)

    def record(self, case: str, *, reached: bool, rerun_ok: bool, verdict: Verdict, new_fault: bool = True) -> None:
        """``new_fault=False``: another token checked after a fault already counted (its figures still add)."""
        self.cases.append(case)
        self.injected += int(reached and new_fault)
        self.converged += int(reached and new_fault and rerun_ok and not verdict.problems)
        self.versions_duplicated += verdict.versions_duplicated
        self.events_lost += verdict.events_lost

    def add(self, other: FaultTally) -> None:
        """Add another session's figures (an xdist worker's) to these."""
        self.cases.extend(other.cases)
        self.injected += other.injected
        self.converged += other.converged
        self.versions_duplicated += other.versions_duplicated
        self.events_lost += other.events_lost

    def lines(self) -> list[str]:
        return [
            f"end states checked: {len(self.cases)}",
            f"faults injected: {self.injected}",
            f"re-runs converged: {self.converged}",
            f"versions duplicated: {self.versions_duplicated} (must be 0)",
            f"events lost: {self.events_lost} (must be 0)",
        ]
