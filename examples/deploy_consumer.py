#!/usr/bin/env python3
"""The deploy side of `token_ready_for_deploy`: check the model's bytes, then deploy it, once.

    # Pub/Sub (honours PUBSUB_EMULATOR_HOST, like every Google client)
    python examples/deploy_consumer.py pubsub --subscription projects/P/subscriptions/deploy
    # a Standard Webhooks endpoint (the webhook sink's secret in HOKUSAI_WEBHOOK_SECRET)
    python examples/deploy_consumer.py webhook --port 8080

For each event:
1. parse it with the CloudEvents SDK (binary mode from Pub/Sub attributes, structured mode from the
   webhook body); anything that is not a `token_ready_for_deploy` event is acknowledged and skipped;
2. look its id up in a small SQLite file (`--state`): delivery is at least once, so an event already
   handled (deployed or refused) is acknowledged and ignored, also after a restart;
3. run `hokusai-ml-platform model verify --token-id T --version V --output json [--public-key PATH]`,
   which downloads the registered version and checks its bytes against the digest the registration
   recorded (and its signature, with a key);
4. exit 0, `"verified": true`, and the same event id, token, version, URI and digest as the event
   (`model verify` vouches for the registration the token holds now: an event of an earlier one, the
   token reset or registered again since, deploys nothing): "deploy"
   (here: print the model URI; put your rollout in `deploy()`); exit 1: refuse, report the first
   failed check, never deploy; any other exit (a service down, bad settings): leave the event
   unacknowledged so it comes back later.

One JSON line per event goes to stdout (`event_id`, `outcome`, `token_id`, `model_version`,
`model_uri`, `detail`); a readable line goes to stderr. The verification needs what the CLI needs
(MLFLOW_TRACKING_URI, HOKUSAI_DATABASE_URL, ...) in the environment. The Pub/Sub loop handles one
message at a time; the webhook server answers requests side by side (one slow client must not stop
every deploy), and a delivery of an event that another request is still verifying is answered 503
(the sink retries it, and then finds it done). Before any signature check the server bounds what a
request may cost: a Content-Length it can trust (400, 411, 413 otherwise) and a body that arrives
within its time (408).

Needs: google-cloud-pubsub (pubsub mode), cloudevents>=2, standardwebhooks (webhook mode).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shlex
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.json import JSONFormat

EVENT_TYPE = "token_ready_for_deploy"
DEFAULT_STATE = "deploy-consumer.sqlite"
DEFAULT_VERIFY_COMMAND = "hokusai-ml-platform"
VERIFY_TIMEOUT_SECONDS = 900.0  # a multi-GiB model downloads and hashes within this
ACK_DEADLINE_SECONDS = 600  # Pub/Sub: how long a message stays ours while it is being verified
PULL_TIMEOUT_SECONDS = 10.0
RETRY_DELAY_SECONDS = 30  # Pub/Sub: a message whose verification could not run comes back after this
MAX_WEBHOOK_BODY = 1024 * 1024
READ_TIMEOUT_SECONDS = 10.0  # webhook: the longest wait for the next bytes of a request
BODY_DEADLINE_SECONDS = 30.0  # webhook: the longest a body may take to arrive, however it trickles
# webhook: after an early answer (the body unread), what is read and dropped before the connection
# closes, so that the client gets the answer rather than a reset (a lingering close, as web servers do)
LINGER_BYTES = 4 * 1024 * 1024
LINGER_SECONDS = 2.0
IN_FLIGHT = "another delivery of this event is being handled; come back later"
WEBHOOK_SECRET_ENV = "HOKUSAI_WEBHOOK_SECRET"

# per outcome: acknowledge the Pub/Sub message? which HTTP status for the webhook sender?
DEPLOYED, DUPLICATE, REFUSED, RETRY, REJECTED, IGNORED = (
    "deployed",
    "duplicate",
    "refused",
    "retry",
    "rejected",
    "ignored",
)
ACK = {DEPLOYED: True, DUPLICATE: True, REFUSED: True, REJECTED: True, IGNORED: True, RETRY: False}
# The sink retries 429/5xx and never other 4xx: a refused model is final (the delivery becomes a dead
# letter the site sees in `token show`); a verification that could not run is retried.
HTTP_STATUS = {DEPLOYED: 200, DUPLICATE: 200, IGNORED: 200, REFUSED: 422, REJECTED: 400, RETRY: 503}


@dataclass(frozen=True)
class Outcome:
    event_id: str | None
    outcome: str
    token_id: str | None = None
    model_version: str | None = None
    model_uri: str | None = None
    detail: str = ""


# ------------------------------------------------------------------------------------ dedupe store


class ProcessedEvents:
    """Event ids already handled, in a SQLite file, so a restarted consumer still dedupes."""

    def __init__(self, path: str | Path) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS processed_events ("
            " event_id TEXT PRIMARY KEY, outcome TEXT NOT NULL, token_id TEXT, model_version TEXT,"
            " model_uri TEXT, detail TEXT, processed_at TEXT NOT NULL)"
        )

    def outcome_of(self, event_id: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT outcome FROM processed_events WHERE event_id = ?", (event_id,)).fetchone()
        return row[0] if row else None

    def record(self, outcome: Outcome) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO processed_events VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    outcome.event_id,
                    outcome.outcome,
                    outcome.token_id,
                    outcome.model_version,
                    outcome.model_uri,
                    outcome.detail,
                    datetime.now(UTC).isoformat(),
                ),
            )

    def close(self) -> None:
        self._db.close()


class InFlight:
    """The event ids being handled right now. The webhook server handles requests side by side: a
    second delivery of an event that is still being verified must not verify and deploy it again."""

    def __init__(self) -> None:
        self._ids: set[str] = set()
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def claim(self, event_id: str) -> Iterator[bool]:
        """Yield whether this caller holds ``event_id`` (False: another is handling it)."""
        with self._lock:
            mine = event_id not in self._ids
            self._ids.add(event_id)
        try:
            yield mine
        finally:
            if mine:
                with self._lock:
                    self._ids.discard(event_id)


# ------------------------------------------------------------------------------------ verification


@dataclass(frozen=True)
class Verification:
    exit_code: int
    result: dict[str, Any] | None  # the JSON `model verify` printed, when it printed one
    message: str  # the CLI's last stderr line (its one clear error line), for the report


def run_verify(
    command: list[str], *, token_id: str, version: str, public_key: str | None, timeout: float
) -> Verification:
    """Run `model verify ... --output json` as a subprocess and read its answer."""
    args = [*command, "model", "verify", "--token-id", token_id, "--version", version, "--output", "json"]
    if public_key:
        args += ["--public-key", public_key]
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return Verification(-1, None, f"model verify did not finish within {timeout:g} s")
    except OSError as exc:
        return Verification(-1, None, f"cannot run {command[0]!r}: {exc.strerror}")
    try:
        result = json.loads(done.stdout)
    except ValueError:
        result = None
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    return Verification(done.returncode, result if isinstance(result, dict) else None, lines[-1] if lines else "")


def first_failure(result: dict[str, Any] | None, fallback: str) -> str:
    """What `model verify` found wrong, as one line: its error (the first mismatch, named), else the
    first failed check, else its last stderr line."""
    if (result or {}).get("error"):
        return str(result["error"])
    for check in (result or {}).get("checks") or []:
        if isinstance(check, dict) and not check.get("ok"):
            return f"{check.get('name')}: {check.get('detail')}"
    return fallback or "model verify reported a mismatch"


def version_number(value: Any) -> str | None:
    """A model version as MLflow numbers it ("02" is version 2), or None when it is not one."""
    text = str(value)
    if not text.isascii() or not text.isdigit() or int(text) == 0:
        return None
    return str(int(text))


def disagreement(event_id: str, data: Mapping[str, Any], result: Mapping[str, Any]) -> str | None:
    """What the verified registration and the event disagree on. `model verify` vouches for the
    registration the token holds now: an event of an earlier registration (the token was reset, or
    registered again since) names another event id, and deploys nothing."""
    pairs = [
        ("id", event_id, result.get("event_id")),
        ("token_id", str(data.get("token_id", "")).upper(), str(result.get("token_id", "")).upper()),
        ("model_version", version_number(data.get("model_version")), version_number(result.get("model_version"))),
        ("model_uri", data.get("model_uri"), result.get("model_uri")),
        ("artifact_digest", data.get("artifact_digest"), result.get("artifact_digest")),
    ]
    for name, in_event, verified in pairs:
        if in_event != verified:
            return f"the event's {name} {in_event!r} is not the token's current registration's {verified!r}"
    return None


# ---------------------------------------------------------------------------------------- handling


def deploy(outcome: Outcome) -> None:
    """Where a real deploy service rolls the model out. Here: print its URI."""
    print(
        f"deploy-consumer: DEPLOY {outcome.model_uri} (token {outcome.token_id}, event {outcome.event_id})",
        file=sys.stderr,
    )


class Consumer:
    """Dedupe, verify, deploy: the same steps for Pub/Sub messages and webhook requests."""

    def __init__(
        self,
        store: ProcessedEvents,
        verify: Callable[..., Verification],
        *,
        report: Callable[[Outcome], None],
        deployer: Callable[[Outcome], None] = deploy,
    ) -> None:
        self.store = store
        self.verify = verify
        self.report = report
        self.deployer = deployer
        self.in_flight = InFlight()

    def handle(self, event: BaseCloudEvent) -> Outcome:
        with self.in_flight.claim(event.get_id()) as mine:
            outcome = self._decide(event) if mine else Outcome(event.get_id(), RETRY, detail=IN_FLIGHT)
            if outcome.outcome == DEPLOYED:
                self.deployer(outcome)
            if outcome.outcome in (DEPLOYED, REFUSED):
                # after the deploy: a crash in between means a second deploy, never a lost one
                self.store.record(outcome)
        self.report(outcome)
        return outcome

    def reject(self, event_id: str | None, detail: str) -> Outcome:
        outcome = Outcome(event_id, REJECTED, detail=detail)
        self.report(outcome)
        return outcome

    def _decide(self, event: BaseCloudEvent) -> Outcome:
        event_id = event.get_id()
        if event.get_type() != EVENT_TYPE:
            return Outcome(event_id, IGNORED, detail=f"event type {event.get_type()!r}")
        data = event.get_data()
        if not isinstance(data, dict) or not all(data.get(k) for k in ("token_id", "model_version", "model_uri")):
            return Outcome(event_id, REJECTED, detail="data lacks token_id, model_version or model_uri")
        token_id, version, uri = str(data["token_id"]), version_number(data["model_version"]), str(data["model_uri"])
        if version is None:
            detail = f"model_version {data['model_version']!r} is not a version number"
            return Outcome(event_id, REJECTED, detail=detail)
        this = Outcome(event_id, DUPLICATE, token_id, version, uri)
        if (previous := self.store.outcome_of(event_id)) is not None:
            return replace(this, detail=f"already {previous}")
        verification = self.verify(token_id=token_id, version=version)
        result = verification.result
        if verification.exit_code == 1:
            return replace(this, outcome=REFUSED, detail=first_failure(result, verification.message))
        if verification.exit_code != 0 or result is None:
            detail = verification.message or f"model verify exited {verification.exit_code}"
            return replace(this, outcome=RETRY, detail=detail)
        if result.get("verified") is not True:
            return replace(this, outcome=REFUSED, detail=first_failure(result, "not verified"))
        if (mismatch := disagreement(event_id, data, result)) is not None:
            return replace(this, outcome=REFUSED, detail=mismatch)
        return replace(this, outcome=DEPLOYED, detail=f"verified {result.get('artifact_digest')}")


def print_report(outcome: Outcome) -> None:
    # one write per line (print writes the newline apart): the webhook server reports from many threads
    sys.stdout.write(json.dumps(asdict(outcome)) + "\n")
    sys.stdout.flush()
    what = outcome.model_uri or outcome.token_id or ""
    line = f"deploy-consumer: {outcome.outcome} {what} (event {outcome.event_id}) {outcome.detail}".rstrip()
    sys.stderr.write(line + "\n")


def parse_event(headers: Mapping[str, str], body: bytes) -> BaseCloudEvent:
    """A CloudEvent from binary mode (ce-* headers/attributes) or structured mode (the body)."""
    return ce_http.from_http(ce_http.HTTPMessage(headers=dict(headers), body=body), JSONFormat())


PARSE_ERRORS = (BaseCloudEventException, ValueError, TypeError, KeyError)


# ----------------------------------------------------------------------------------------- Pub/Sub


def consume_pubsub(consumer: Consumer, subscription: str, *, max_idle: float | None, stop: threading.Event) -> None:
    """Pull, handle and acknowledge messages until ``stop`` is set or nothing came for ``max_idle`` s."""
    from google.api_core import exceptions as gexc
    from google.cloud import pubsub_v1

    subscriber = pubsub_v1.SubscriberClient()
    last_message = time.monotonic()
    try:
        while not stop.is_set():
            wait = PULL_TIMEOUT_SECONDS
            if max_idle is not None:  # a pull with nothing to return waits out its timeout: not past max_idle
                wait = max(0.5, min(wait, max_idle - (time.monotonic() - last_message)))
            try:
                response = subscriber.pull(
                    request={"subscription": subscription, "max_messages": 10},
                    timeout=wait,
                    retry=None,
                )
                received = list(response.received_messages)
            except (gexc.DeadlineExceeded, gexc.ServiceUnavailable):
                received = []
            if not received:
                if max_idle is not None and time.monotonic() - last_message >= max_idle:
                    return
                continue
            last_message = time.monotonic()
            for item in received:
                ack_id = item.ack_id
                # keep the message ours while the model is downloaded and hashed
                subscriber.modify_ack_deadline(
                    request={
                        "subscription": subscription,
                        "ack_ids": [ack_id],
                        "ack_deadline_seconds": ACK_DEADLINE_SECONDS,
                    }
                )
                message = item.message
                try:
                    event = parse_event(message.attributes, message.data)
                except PARSE_ERRORS as exc:
                    outcome = consumer.reject(message.attributes.get("ce-id"), f"not a CloudEvent: {exc}")
                else:
                    outcome = consumer.handle(event)
                if ACK[outcome.outcome]:
                    subscriber.acknowledge(request={"subscription": subscription, "ack_ids": [ack_id]})
                else:  # redelivered once the deadline passes: a pause, not a hot loop on a broken verify
                    subscriber.modify_ack_deadline(
                        request={
                            "subscription": subscription,
                            "ack_ids": [ack_id],
                            "ack_deadline_seconds": RETRY_DELAY_SECONDS,
                        }
                    )
    finally:
        subscriber.close()


# ----------------------------------------------------------------------------------------- webhook


class BadRequest(Exception):
    """A request refused before its body is read: the HTTP status and why."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def body_length(headers: Any) -> int:
    """The body's length from ``Content-Length``, or ``BadRequest``: the length decides how much is
    read, so only one plain decimal number is trusted (RFC 9112 section 6.3)."""
    values = [part.strip() for value in headers.get_all("Content-Length") or [] for part in value.split(",")]
    if headers.get("Transfer-Encoding") is not None:
        if values:  # both: which one frames the body is the smuggling question; refuse it
            raise BadRequest(400, "both Transfer-Encoding and Content-Length")
        raise BadRequest(411, "a body without Content-Length (Transfer-Encoding is not read here)")
    if not values:
        raise BadRequest(411, "no Content-Length")
    if len(set(values)) > 1:
        raise BadRequest(400, "Content-Length given more than once, differently")
    if not (values[0].isascii() and values[0].isdigit()):
        raise BadRequest(400, f"Content-Length {values[0][:40]!r} is not a number of bytes")
    length = int(values[0])
    if length > MAX_WEBHOOK_BODY:
        raise BadRequest(413, f"body of {length} bytes, over {MAX_WEBHOOK_BODY}")
    return length


def make_webhook_server(
    consumer: Consumer,
    secret: str,
    host: str,
    port: int,
    *,
    read_timeout: float = READ_TIMEOUT_SECONDS,
    body_deadline: float = BODY_DEADLINE_SECONDS,
) -> ThreadingHTTPServer:
    """An HTTP server that verifies Standard Webhooks signatures, then handles the event.

    Each request has a thread of its own (daemon threads: a stopping consumer does not wait for a
    verification; the sink sends that event again). Before the signature is checked a request may
    cost at most ``MAX_WEBHOOK_BODY`` bytes and ``body_deadline`` seconds.
    """
    from standardwebhooks import Webhook
    from standardwebhooks.webhooks import WebhookVerificationError

    verifier = Webhook(secret)

    class Handler(BaseHTTPRequestHandler):
        timeout = read_timeout  # every read, from the request line on, waits at most this long

        def do_POST(self) -> None:
            hook_id = self.headers.get("webhook-id")
            try:
                body = self._read_body(body_length(self.headers))
            except BadRequest as exc:
                self._answer(exc.status, consumer.reject(hook_id, exc.detail), linger=True)
                return
            except TimeoutError:
                detail = f"the body did not arrive within {read_timeout:g} s of silence or {body_deadline:g} s in all"
                self._answer(408, consumer.reject(hook_id, detail), linger=True)
                return
            headers = {name.lower(): value for name, value in self.headers.items()}
            try:
                verifier.verify(body, headers, json_parse=False)
            except (WebhookVerificationError, ValueError) as exc:  # ValueError: malformed base64 or UTF-8
                self._answer(401, consumer.reject(headers.get("webhook-id"), f"bad webhook signature: {exc}"))
                return
            try:
                event = parse_event(headers, body)
            except PARSE_ERRORS as exc:
                self._answer(400, consumer.reject(headers.get("webhook-id"), f"not a CloudEvent: {exc}"))
                return
            outcome = consumer.handle(event)
            self._answer(HTTP_STATUS[outcome.outcome], outcome)

        def _read_body(self, length: int) -> bytes:
            """``length`` bytes, or ``TimeoutError`` once the deadline passed (a trickle included), or
            ``BadRequest`` when the client closed first."""
            deadline = time.monotonic() + body_deadline
            pieces: list[bytes] = []
            received = 0
            while received < length:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                self.connection.settimeout(min(read_timeout, left))
                piece = self.rfile.read1(length - received)
                if not piece:
                    raise BadRequest(400, f"the body ended after {received} of {length} bytes")
                pieces.append(piece)
                received += len(piece)
            return b"".join(pieces)

        def _answer(self, status: int, outcome: Outcome, *, linger: bool = False) -> None:
            body = json.dumps({"outcome": outcome.outcome, "detail": outcome.detail}).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()
                if linger:
                    self._drop_unread_body()
            except OSError:
                pass  # the client went away (or timed out) first: nobody is left to answer
            self.close_connection = True

        def _drop_unread_body(self) -> None:
            """Close gently after answering before the body was read: closing with unread bytes sends
            a reset, which can reach the client before it has read the answer."""
            self.connection.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + LINGER_SECONDS
            dropped = 0
            while dropped < LINGER_BYTES and (left := deadline - time.monotonic()) > 0:
                self.connection.settimeout(left)
                piece = self.rfile.read1(65536)
                if not piece:
                    return
                dropped += len(piece)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one report line per event is enough

    return ThreadingHTTPServer((host, port), Handler)


# -------------------------------------------------------------------------------------------- main


def positive_seconds(text: str) -> float:
    """A number of seconds: NaN would never time out, an infinity never end."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive, finite number of seconds")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--state", default=DEFAULT_STATE, help="SQLite file of handled event ids (default: %(default)s)"
    )
    common.add_argument("--public-key", help="PEM public key: model verify also checks the signature")
    common.add_argument(
        "--verify-command",
        default=os.environ.get("HOKUSAI_VERIFY_COMMAND", DEFAULT_VERIFY_COMMAND),
        help="how to run the CLI (default: $HOKUSAI_VERIFY_COMMAND, else %(default)s)",
    )
    common.add_argument("--verify-timeout", type=positive_seconds, default=VERIFY_TIMEOUT_SECONDS)
    modes = parser.add_subparsers(dest="mode", required=True)
    pubsub = modes.add_parser("pubsub", parents=[common], help="pull from a Pub/Sub subscription")
    pubsub.add_argument("--subscription", required=True, help="projects/P/subscriptions/S")
    pubsub.add_argument("--max-idle", type=positive_seconds, help="exit after this many seconds without a message")
    webhook = modes.add_parser("webhook", parents=[common], help=f"serve a webhook endpoint (${WEBHOOK_SECRET_ENV})")
    webhook.add_argument("--host", default="127.0.0.1")
    webhook.add_argument("--port", type=int, default=8080)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = shlex.split(args.verify_command)
    if args.mode == "webhook" and not os.environ.get(WEBHOOK_SECRET_ENV):
        print(f"deploy-consumer: error: set {WEBHOOK_SECRET_ENV} to the webhook sink's whsec_ secret", file=sys.stderr)
        return 2

    def verify(*, token_id: str, version: str) -> Verification:
        return run_verify(
            command, token_id=token_id, version=version, public_key=args.public_key, timeout=args.verify_timeout
        )

    store = ProcessedEvents(args.state)
    consumer = Consumer(store, verify, report=print_report)
    stop = threading.Event()
    try:
        if args.mode == "pubsub":
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            consume_pubsub(consumer, args.subscription, max_idle=args.max_idle, stop=stop)
        else:
            server = make_webhook_server(consumer, os.environ[WEBHOOK_SECRET_ENV], args.host, args.port)
            # SIGTERM ends serve_forever from another thread (shutdown() waits for the loop)
            signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
            print(
                f"deploy-consumer: listening on http://{args.host}:{server.server_port}/", file=sys.stderr, flush=True
            )
            with server:
                server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
