"""examples/deploy_consumer.py as a deploy service runs it, against the real services.

A model is registered with the CLI (Pub/Sub or webhook sink, the MLflow server, PostgreSQL), then
the consumer runs as a subprocess: it pulls the event from the Pub/Sub emulator (or receives the
signed webhook), runs `model verify` (the CLI, as a subprocess), and deploys only a model whose bytes
are the ones registered. What a deploy service's operator would check: one "deployed" line with the
registered URI, nothing deployed twice across a restart, a tampered model refused with the file
named, a forged webhook turned away with 401.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shlex
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
from standardwebhooks import Webhook

from tests.canaries import CANARIES
from tests.helpers import CLI_PYTHON, register_args
from tests.mlflow_store import stored_copies

pytestmark = [pytest.mark.e2e]

REPO_ROOT = Path(__file__).resolve().parents[3]
CONSUMER = REPO_ROOT / "examples" / "deploy_consumer.py"
CONSUMER_TIMEOUT = 120.0
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def consumer_env(cli_env: dict[str, str], pubsub_emulator=None) -> dict[str, str]:
    """The deploy service's environment: what the CLI needs to verify, and how to run it."""
    env = {**cli_env, "HOKUSAI_VERIFY_COMMAND": f"{shlex.quote(CLI_PYTHON)} -m hokusai_action"}
    if pubsub_emulator is not None:
        env["PUBSUB_EMULATOR_HOST"] = pubsub_emulator.host
    for name in ("no_proxy", "NO_PROXY"):  # the emulator fixture adds loopback to these
        if name in os.environ:
            env[name] = os.environ[name]
    return env


def run_pubsub_consumer(env: dict[str, str], subscription: str, state: Path, *extra: str) -> list[dict]:
    """Run the consumer until the subscription has been quiet for 3 s; return its report lines."""
    args = ["pubsub", "--subscription", subscription, "--state", str(state), "--max-idle", "3", *extra]
    done = subprocess.run(
        [sys.executable, str(CONSUMER), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=CONSUMER_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert CANARIES.webhook_secret not in done.stdout + done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def register(run_cli, token: str, model: Path, env: dict[str, str], *extra: str):
    result = run_cli(*register_args(token, model, "--output", "json", *extra), env=env)
    assert result.code == 0, result.stderr
    return result.json


def pubsub_sink(pubsub_emulator, topic: str) -> dict[str, str]:
    return {
        "HOKUSAI_EVENT_SINKS": "pubsub,database",
        "HOKUSAI_PUBSUB_TOPIC": topic,
        "PUBSUB_EMULATOR_HOST": pubsub_emulator.host,
        "HOKUSAI_PUBSUB_TIMEOUT": "10",
    }


def test_pubsub_event_is_verified_and_deployed_once_across_a_restart(
    run_cli, cli_env, make_token, make_model, pubsub_emulator, pubsub_topic, tmp_path
):
    # a second subscription keeps a copy of the message, to deliver it again as Pub/Sub may
    witness = pubsub_emulator.make_subscription(pubsub_topic.topic, ordered=False)
    token = make_token()
    registered = register(run_cli, token, make_model(), pubsub_sink(pubsub_emulator, pubsub_topic.topic))
    env = consumer_env(cli_env, pubsub_emulator)
    state = tmp_path / "deploy-state.sqlite"

    first = run_pubsub_consumer(env, pubsub_topic.subscription, state)

    assert [line["outcome"] for line in first] == ["deployed"], first
    assert first[0]["event_id"] == registered["event_id"]
    assert first[0]["model_uri"] == registered["model_uri"]
    assert first[0]["token_id"] == token
    assert first[0]["model_version"] == str(registered["model_version"])

    # the same event again, to a consumer started afresh: acknowledged, not deployed
    (copy,) = pubsub_emulator.pull(witness, max_messages=1, timeout=10)
    pubsub_emulator.publisher.publish(pubsub_topic.topic, copy.data, **dict(copy.attributes)).result(timeout=30)
    second = run_pubsub_consumer(env, pubsub_topic.subscription, state)

    assert [(line["outcome"], line["event_id"]) for line in second] == [("duplicate", registered["event_id"])]
    assert second[0]["detail"] == "already deployed"
    # and it was acknowledged: a third run finds nothing
    assert run_pubsub_consumer(env, pubsub_topic.subscription, state) == []


def test_a_model_tampered_in_the_artifact_store_is_refused(
    run_cli, cli_env, make_token, make_model, pubsub_emulator, pubsub_topic, tmp_path, tmp_path_factory
):
    token = make_token()
    model = make_model(files={"weights.bin": os.urandom(64 * 1024), "config/params.json": b"{}"})
    registered = register(run_cli, token, model, pubsub_sink(pubsub_emulator, pubsub_topic.topic))
    (stored,) = stored_copies(tmp_path_factory, model / "weights.bin")
    tampered = bytearray(stored.read_bytes())
    tampered[1000] ^= 0xFF  # one byte, same size: only the digest can tell
    stored.write_bytes(bytes(tampered))
    env = consumer_env(cli_env, pubsub_emulator)
    state = tmp_path / "deploy-state.sqlite"

    lines = run_pubsub_consumer(env, pubsub_topic.subscription, state)

    assert [line["outcome"] for line in lines] == ["refused"], lines
    assert lines[0]["event_id"] == registered["event_id"]
    # unsigned, the registration records one digest for the tree: the report says the bytes changed
    assert "bytes" in lines[0]["detail"]
    # refused is final: the message was acknowledged and nothing comes back
    assert run_pubsub_consumer(env, pubsub_topic.subscription, state) == []


# ------------------------------------------------------------------------------------------ webhook


class WebhookConsumer:
    """The consumer's webhook mode as a subprocess on a free loopback port."""

    def __init__(self, env: dict[str, str], state: Path, *extra: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(CONSUMER), "webhook", "--port", "0", "--state", str(state), *extra],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stderr is not None and self.process.stdout is not None
        first = self.process.stderr.readline()  # "deploy-consumer: listening on http://127.0.0.1:PORT/"
        assert "listening on " in first, first + self.process.stderr.read()
        self.url = first.split("listening on ", 1)[1].strip()
        self.lines: list[dict] = []
        self.errors: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stdout, self.lines, json.loads), daemon=True),
            threading.Thread(target=self._read, args=(self.process.stderr, self.errors, str), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream, into: list, parse) -> None:
        for line in stream:
            into.append(parse(line))

    def outcomes(self, count: int, timeout: float = 30.0) -> list[dict]:
        """The consumer's output lines once it has printed ``count`` of them (or exited, or ``timeout``).

        It prints each outcome before it answers, but the thread that reads its stdout may not have
        read the last line yet when the answer comes back (seen with the suite on two workers).
        """
        deadline = time.monotonic() + timeout
        while len(self.lines) < count and self.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        return list(self.lines)

    def post(self, body: bytes, headers: dict[str, str]) -> int:
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")  # noqa: S310 (http://127.0.0.1)
        try:
            with _NO_PROXY.open(request, timeout=CONSUMER_TIMEOUT) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        for reader in self._readers:
            reader.join(timeout=10)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def webhook_consumer(cli_env, tmp_path):
    consumer = WebhookConsumer(consumer_env(cli_env), tmp_path / "deploy-state.sqlite")
    try:
        yield consumer
    finally:
        consumer.stop()
        assert consumer.process.returncode == 0, consumer.errors
        assert not any(CANARIES.webhook_secret in line for line in consumer.errors)


def signed(secret: str, event: dict) -> tuple[bytes, dict[str, str]]:
    """A structured-mode body and the Standard Webhooks headers signing it with ``secret``."""
    body = json.dumps(event)
    now = datetime.now(UTC)
    headers = {
        "content-type": "application/cloudevents+json",
        "webhook-id": event["id"],
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(event["id"], now, body),
    }
    return body.encode(), headers


def test_webhook_with_a_bad_signature_is_refused_with_401(webhook_consumer):
    forged_secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    event = {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "https://github.com/hokusai/example",
        "type": "token_ready_for_deploy",
        "datacontenttype": "application/json",
        "data": {"token_id": "XRAY", "model_version": "1", "model_uri": "models:/hokusai-XRAY/1"},
    }
    body, headers = signed(forged_secret, event)

    assert webhook_consumer.post(body, headers) == 401
    unsigned = {k: v for k, v in headers.items() if k != "webhook-signature"}
    assert webhook_consumer.post(body, unsigned) == 401

    lines = webhook_consumer.outcomes(2)
    assert [(line["outcome"], line["event_id"]) for line in lines] == [
        ("rejected", event["id"]),
        ("rejected", event["id"]),
    ]
    assert "bad webhook signature" in lines[0]["detail"]


@pytest.mark.parametrize("kind", ["raw", "pyfunc"])
def test_webhook_event_is_verified_deployed_once_then_a_resend_is_a_duplicate(
    kind, run_cli, make_token, make_model, mlflow_model, webhook_consumer, database
):
    token = make_token()
    model = make_model() if kind == "raw" else mlflow_model(kind, metrics={"auroc": 0.91})
    sink = {"HOKUSAI_EVENT_SINKS": "webhook,database", "HOKUSAI_WEBHOOK_URL": webhook_consumer.url}
    # the consumer answers after `model verify` has downloaded and hashed the model
    registered = register(run_cli, token, model, {**sink, "HOKUSAI_WEBHOOK_TIMEOUT": "120"})

    assert registered["events_delivered"]["webhook"] is True
    lines = webhook_consumer.outcomes(1)
    assert [line["outcome"] for line in lines] == ["deployed"], webhook_consumer.errors
    assert lines[0]["model_uri"] == registered["model_uri"]

    # the sink sending it again (a lost 200): signed afresh, acknowledged, not deployed again
    import sqlalchemy as sa

    from hokusai_action.db.schema import events

    with database.unit_of_work() as uow:
        query = sa.select(events.c.payload).where(events.c.event_id == registered["event_id"])
        payload = uow.execute(query).scalar_one()
    assert webhook_consumer.post(*signed(CANARIES.webhook_secret, payload)) == 200
    assert [line["outcome"] for line in webhook_consumer.outcomes(2)] == ["deployed", "duplicate"]


def test_with_a_public_key_a_signed_model_deploys_and_a_tampered_file_is_named(
    run_cli, cli_env, make_token, make_model, mlflow_model, pubsub_emulator, pubsub_topic, tmp_path, tmp_path_factory
):
    from tests.signing_keys import make_signing_files  # the signing branch's key and CA factory

    keys = make_signing_files(tmp_path / "keys")
    sign = ("--sign", "key", "--signing-key", str(keys.key))
    sink = pubsub_sink(pubsub_emulator, pubsub_topic.topic)
    tampered_model = make_model(files={"weights.bin": os.urandom(64 * 1024), "config/params.json": b"{}"})
    # four independent registrations (four tokens), run side by side; one is a model saved by mlflow.sklearn
    jobs = [
        (make_token(), make_model(), sign),
        (make_token(), make_model(), ()),
        (make_token(), tampered_model, sign),
        (make_token(), mlflow_model("sklearn", metrics={"auroc": 0.91}), sign),
    ]
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        intact, unsigned, tampered, flavored = pool.map(
            lambda job: register(run_cli, job[0], job[1], sink, *job[2]), jobs
        )
    (stored,) = stored_copies(tmp_path_factory, tampered_model / "weights.bin")
    stored.write_bytes(stored.read_bytes()[:-1] + b"\x00")  # the last byte, same size

    lines = run_pubsub_consumer(
        consumer_env(cli_env, pubsub_emulator),
        pubsub_topic.subscription,
        tmp_path / "deploy-state.sqlite",
        "--public-key",
        str(keys.public_key),
    )

    by_event = {line["event_id"]: line for line in lines}
    assert len(lines) == len(by_event) == 4, lines
    assert by_event[intact["event_id"]]["outcome"] == "deployed"
    assert by_event[flavored["event_id"]]["outcome"] == "deployed", by_event[flavored["event_id"]]
    assert by_event[flavored["event_id"]]["model_uri"] == flavored["model_uri"]
    assert by_event[intact["event_id"]]["model_uri"] == intact["model_uri"]
    assert by_event[unsigned["event_id"]]["outcome"] == "refused"  # a key was given: unsigned is not enough
    assert by_event[tampered["event_id"]]["outcome"] == "refused"
    assert "weights.bin" in by_event[tampered["event_id"]]["detail"]


def event_payload(database, event_id: str) -> dict:
    import sqlalchemy as sa

    from hokusai_action.db.schema import events

    with database.unit_of_work() as uow:
        return dict(uow.execute(sa.select(events.c.payload).where(events.c.event_id == event_id)).scalar_one())


def test_an_event_of_a_registration_the_token_no_longer_holds_deploys_nothing(
    run_cli, make_token, make_model, webhook_consumer, database
):
    def post(payload: dict, *, new_id: bool = False) -> int:
        if new_id:  # not deduped: judged on its registration alone
            payload = {**payload, "id": str(uuid.uuid4())}
        return webhook_consumer.post(*signed(CANARIES.webhook_secret, payload))

    token = make_token()
    first_model = make_model()
    first = register(run_cli, token, first_model, {})
    assert run_cli("token", "reset", token).code == 0
    same_bytes = register(run_cli, token, first_model, {})  # version 1 again, as a new registration
    assert same_bytes["model_version"] == "1" and same_bytes["event_id"] != first["event_id"]

    assert post(event_payload(database, first["event_id"])) == 422
    assert post(event_payload(database, same_bytes["event_id"])) == 200
    assert run_cli("token", "reset", token).code == 0
    assert post(event_payload(database, same_bytes["event_id"]), new_id=True) == 422
    other = register(run_cli, token, make_model(), {})
    assert other["model_version"] == "2"
    assert post(event_payload(database, same_bytes["event_id"]), new_id=True) == 422
    assert post(event_payload(database, other["event_id"])) == 200

    lines = webhook_consumer.outcomes(5)
    assert [line["outcome"] for line in lines] == ["refused", "deployed", "refused", "refused", "deployed"]
    assert first["event_id"] in lines[0]["detail"]
    assert "draft" in lines[2]["detail"]
    assert "version 2" in lines[3]["detail"]
    assert [(line["event_id"], line["model_version"]) for line in lines if line["outcome"] == "deployed"] == [
        (same_bytes["event_id"], "1"),
        (other["event_id"], "2"),
    ]


def test_an_event_naming_version_02_is_checked_as_version_2(
    run_cli, make_token, make_model, webhook_consumer, database
):
    token = make_token()
    registered = register(run_cli, token, make_model(), {})
    padded = event_payload(database, registered["event_id"])
    padded["data"]["model_version"] = "0" + str(padded["data"]["model_version"])

    assert webhook_consumer.post(*signed(CANARIES.webhook_secret, padded)) == 200

    (line,) = webhook_consumer.outcomes(1)
    assert (line["outcome"], line["model_version"]) == ("deployed", registered["model_version"])


# ------------------------------------------------------------------ the webhook endpoint under abuse
# Each of these reached the server before any signature check: a length it trusted (-1 read to the end
# of the connection, "abc" a traceback), a body that never came (the one thread waited for ever and
# every deploy stopped). Now: 400/411/413 at once, 408 after the read timeout, and other requests are
# served meanwhile.


def raw_request(url: str, head: str, body: bytes = b"", *, close: bool = False, timeout: float = 30) -> int:
    """Send ``head`` (request line and headers) and ``body`` as they are; the answer's status code.
    The connection stays open (unless ``close``), as a client that has more to send would keep it."""
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as connection:

        def send() -> None:  # beside the read: a server that answers before reading the body is right
            with contextlib.suppress(OSError):
                connection.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
                if close:
                    connection.shutdown(socket.SHUT_WR)

        threading.Thread(target=send, daemon=True).start()
        answer = b""
        while b"\r\n" not in answer:
            piece = connection.recv(4096)
            if not piece:
                raise AssertionError(f"the consumer closed the connection without an answer: {answer!r}")
            answer += piece
    return int(answer.split(b" ", 2)[1])


def post_head(length: str | None, *extra: str) -> str:
    lines = ["POST / HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/cloudevents+json", *extra]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("head", "body", "status"),
    [
        (post_head("-1"), b"x" * (2 * 1024 * 1024), 400),
        (post_head("abc"), b"{}", 400),
        (post_head("+5"), b"{}", 400),
        (post_head("5", "Content-Length: 7"), b"{}", 400),
        (post_head(None), b"{}", 411),
        (post_head(None, "Transfer-Encoding: chunked"), b"2\r\n{}\r\n0\r\n\r\n", 411),
        (post_head(str(10**12)), b"{}", 413),
    ],
    ids=["negative", "not-a-number", "signed", "two-lengths", "missing", "chunked", "too-big"],
)
def test_a_request_with_a_bad_length_is_answered_at_once(webhook_consumer, head, body, status):
    started = time.monotonic()
    assert raw_request(webhook_consumer.url, head, body) == status
    assert time.monotonic() - started < 5
    (line,) = webhook_consumer.outcomes(1)
    assert line["outcome"] == "rejected"
    assert "Traceback" not in "".join(webhook_consumer.errors)


def test_a_body_that_never_comes_times_out_with_408_while_others_are_served(webhook_consumer):
    event = {"specversion": "1.0", "id": str(uuid.uuid4()), "source": "test", "type": "token_ready_for_deploy"}
    forged = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    with ThreadPoolExecutor(max_workers=1) as pool:
        stalled = pool.submit(raw_request, webhook_consumer.url, post_head("100"), b"0123456789")
        time.sleep(0.5)  # the stalled request is in, waiting for 90 more bytes
        started = time.monotonic()
        assert webhook_consumer.post(*signed(forged, event)) == 401  # served beside it, at once
        assert time.monotonic() - started < 5
        assert stalled.result(timeout=60) == 408
    outcomes = sorted(line["outcome"] for line in webhook_consumer.outcomes(2))
    assert outcomes == ["rejected", "rejected"]


SLOW_VERIFY = """
import json, sys, time
args = sys.argv[1:]
with open(sys.argv[0] + ".calls", "a") as calls:
    calls.write(" ".join(args) + "\\n")
time.sleep(3)
token, version = args[args.index("--token-id") + 1], args[args.index("--version") + 1]
print(json.dumps({"token_id": token, "model_version": version, "model_uri": f"models:/hokusai-{token}/{version}",
                  "event_id": EVENT_ID, "artifact_digest": "sha256:" + "1f" * 32, "verified": True, "checks": [],
                  "error": None}))
"""


def test_two_deliveries_of_one_event_at_once_deploy_it_once(cli_env, tmp_path):
    """The server answers requests side by side: a second delivery of an event still being verified is
    told to come back (503, which the sink retries), and one that comes after is a duplicate."""
    verify = tmp_path / "slow_verify.py"
    event_id = str(uuid.uuid4())
    # the stand-in for `model verify` vouches for this event as the token's current registration
    verify.write_text(f"EVENT_ID = {event_id!r}\n" + SLOW_VERIFY)
    env = {**consumer_env(cli_env), "HOKUSAI_VERIFY_COMMAND": f"{shlex.quote(sys.executable)} {verify}"}
    consumer = WebhookConsumer(env, tmp_path / "deploy-state.sqlite")
    try:
        event = {
            "specversion": "1.0",
            "id": event_id,
            "source": "test",
            "type": "token_ready_for_deploy",
            "datacontenttype": "application/json",
            "data": {
                "token_id": "XRAY",
                "model_version": "3",
                "model_uri": "models:/hokusai-XRAY/3",
                "artifact_digest": "sha256:" + "1f" * 32,
            },
        }
        with ThreadPoolExecutor(max_workers=2) as pool:
            first = pool.submit(consumer.post, *signed(CANARIES.webhook_secret, event))
            time.sleep(1)  # the first is being verified (3 s)
            started = time.monotonic()
            assert consumer.post(*signed(CANARIES.webhook_secret, event)) == 503
            assert time.monotonic() - started < 2  # told at once, not held until the first is done
            assert first.result(timeout=60) == 200
        assert consumer.post(*signed(CANARIES.webhook_secret, event)) == 200
        outcomes = [line["outcome"] for line in consumer.outcomes(3)]
    finally:
        consumer.stop()
    assert outcomes == ["retry", "deployed", "duplicate"], consumer.errors
    assert len(verify.with_name("slow_verify.py.calls").read_text().splitlines()) == 1
