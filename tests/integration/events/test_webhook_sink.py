"""The webhook sink against a real HTTP receiver on loopback (pytest-httpserver, threaded).

The receiver checks what a subscriber would: the Standard Webhooks signature verifies with the
shared secret, the body parses as a CloudEvents 1.0 structured event with every attribute, and the
``webhook-id`` is the event id on every attempt.
"""

from __future__ import annotations

import base64
import logging
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_structured_event
from pytest_httpserver import HTTPServer
from standardwebhooks import Webhook
from werkzeug import Request, Response

from hokusai_action.domain.event import CloudEventRecord, event_id_for
from hokusai_action.errors import EXIT_BAD_INPUT, EXIT_EVENTS_PENDING, InputError, SinkDeliveryError
from hokusai_action.events.webhook import WebhookSink, parse_retry_after
from tests.raw_receiver import MIB, RawReceiver, endless_chunked, trickled
from tests.tls_files import make_tls_files

HOOK_PATH = "/hook"


# --- the receiver ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


Answer = Callable[[], Response]


class Receiver:
    """Answers POSTs from a script (the last answer repeats) and records every request it got."""

    def __init__(self, server: HTTPServer) -> None:
        self.server = server
        self.requests: list[Received] = []
        self.answers: list[Answer] = [lambda: Response(status=200)]
        self.release = threading.Event()  # set at teardown, so a hanging answer ends at once
        self._lock = threading.Lock()
        server.expect_request(HOOK_PATH, method="POST").respond_with_handler(self._handle)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}{HOOK_PATH}"

    def will_answer(self, *answers: Answer) -> None:
        self.answers = list(answers)

    def _handle(self, request: Request) -> Response:
        with self._lock:
            self.requests.append(Received(path=request.path, headers=dict(request.headers), body=request.get_data()))
            answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return answer()

    def hang(self, seconds: float) -> Answer:
        def answer() -> Response:
            self.release.wait(seconds)
            return Response(status=200)

        return answer


def status(code: int, *, headers: dict[str, str] | None = None, body: str = "") -> Answer:
    return lambda: Response(body, status=code, headers=headers or {})


@pytest.fixture(scope="module")
def receiver_server() -> Iterator[HTTPServer]:
    # threaded: a handler that outlives the client's timeout must not hold up the retry behind it
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def receiver(receiver_server: HTTPServer) -> Iterator[Receiver]:
    hook = Receiver(receiver_server)
    try:
        yield hook
        receiver_server.check_assertions()  # no request reached a path or method nobody expected
    finally:
        hook.release.set()
        receiver_server.clear()


# --- factories ---------------------------------------------------------------------------------------


def make_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@pytest.fixture
def secret(webhook_secret: str) -> str:
    return webhook_secret  # the canary from tests/conftest.py: the autouse check fails a test that prints it


def make_event(**overrides: object) -> CloudEventRecord:
    data = {
        "token_id": "XRAY",
        "mlflow_run_id": "0f3c1b2a9d8e4f5a",
        "model_name": "hokusai-XRAY",
        "model_version": "3",
        "model_uri": "models:/hokusai-XRAY/3",
        "metric_name": "auroc",
        "metric_value": 0.91,
        "baseline_value": 0.82,
        "artifact_digest": "sha256:" + "ab" * 32,
        "git": {"sha": "1" * 40, "ref": "refs/heads/main", "repository": "hokusai/models"},
        "registered_at": "2025-01-02T03:04:05Z",
    }
    fields: dict[str, object] = {
        "id": event_id_for("XRAY", str(data["artifact_digest"])),
        "source": "hokusai-ml-platform",
        "time": "2025-01-02T03:04:05Z",
        "subject": "XRAY",
        "data": data,
    }
    fields.update(overrides)
    return CloudEventRecord(**fields)  # type: ignore[arg-type]


class RecordingSleep:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def sleeps() -> RecordingSleep:
    return RecordingSleep()


@pytest.fixture
def make_sink(receiver: Receiver, secret: str, sleeps: RecordingSleep) -> Iterator[Callable[..., WebhookSink]]:
    made: list[WebhookSink] = []

    def make(**overrides: object) -> WebhookSink:
        options: dict[str, object] = {
            "url": receiver.url,
            "secret": secret,
            "timeout": 2.0,
            "sleep": sleeps,
        }
        options.update(overrides)
        sink = WebhookSink(**options)  # type: ignore[arg-type]
        made.append(sink)
        return sink

    yield make
    for sink in made:
        sink.close()


def assert_signed_cloudevent(received: Received, *, secret: str, event: CloudEventRecord) -> None:
    """Check one request as a subscriber would: signature, content type, and every attribute."""
    Webhook(secret).verify(received.body, received.headers)  # raises when the signature is wrong
    headers = {name.lower(): value for name, value in received.headers.items()}
    assert headers["webhook-id"] == event.id
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
    assert headers["content-type"] == "application/cloudevents+json; charset=utf-8"
    assert not any(name.startswith("ce-") for name in headers), "structured mode carries no ce- headers"

    parsed = from_structured_event(HTTPMessage(headers=headers, body=received.body))
    assert parsed.get_id() == event.id
    assert parsed.get_source() == "hokusai-ml-platform"
    assert parsed.get_specversion() == "1.0"
    assert parsed.get_type() == "token_ready_for_deploy"
    assert parsed.get_time() == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert parsed.get_subject() == "XRAY"
    assert parsed.get_datacontenttype() == "application/json"
    assert parsed.get_data() == event.data


# --- delivery ----------------------------------------------------------------------------------------


@pytest.mark.integration
def test_delivers_one_signed_structured_cloudevent(receiver, make_sink, secret, sleeps):
    event = make_event()

    make_sink().deliver(event)

    assert len(receiver.requests) == 1
    assert_signed_cloudevent(receiver.requests[0], secret=secret, event=event)
    assert sleeps.calls == []


@pytest.mark.integration
def test_retries_503_then_succeeds_with_the_same_webhook_id(receiver, make_sink, secret, sleeps):
    receiver.will_answer(status(503), status(503), status(200))
    event = make_event()

    make_sink(backoff_base=0.5, backoff_max=30.0).deliver(event)

    assert len(receiver.requests) == 3
    for received in receiver.requests:
        assert_signed_cloudevent(received, secret=secret, event=event)
    assert {r.headers["Webhook-Id"] for r in receiver.requests} == {event.id}
    # full jitter: uniform in [0, base * 2**(attempt-1)]
    assert len(sleeps.calls) == 2
    assert 0.0 <= sleeps.calls[0] <= 0.5
    assert 0.0 <= sleeps.calls[1] <= 1.0


@pytest.mark.integration
def test_each_attempt_is_signed_afresh(receiver, make_sink, secret):
    # the receiver's replay window is 5 minutes: a retry must carry its own timestamp and signature
    receiver.will_answer(status(500), status(200))
    slept: list[float] = []
    event = make_event()

    make_sink(sleep=lambda s: (slept.append(s), time.sleep(1.1))).deliver(event)

    first, second = receiver.requests
    assert int(second.headers["Webhook-Timestamp"]) > int(first.headers["Webhook-Timestamp"])
    assert second.headers["Webhook-Signature"] != first.headers["Webhook-Signature"]
    for received in receiver.requests:
        assert_signed_cloudevent(received, secret=secret, event=event)


@pytest.mark.integration
def test_400_is_not_retried(receiver, make_sink, sleeps):
    receiver.will_answer(status(400, body="data.token_id: required"))

    with pytest.raises(SinkDeliveryError) as caught:
        make_sink().deliver(make_event())

    assert len(receiver.requests) == 1
    assert sleeps.calls == []
    error = caught.value
    assert error.retryable is False
    assert error.exit_code == EXIT_EVENTS_PENDING
    assert "HTTP 400" in str(error)
    assert "attempt 1/5" in str(error)
    assert "data.token_id: required" in str(error)  # the receiver's reason helps fix it
    assert "events retry" in error.one_line()  # a dead letter: re-queued by hand once fixed


@pytest.mark.integration
@pytest.mark.parametrize("code", [400, 401, 403, 404, 409, 410, 422])
def test_permanent_4xx_is_one_post_and_not_retryable(receiver, make_sink, sleeps, code):
    receiver.will_answer(status(code))

    with pytest.raises(SinkDeliveryError) as caught:
        make_sink().deliver(make_event())

    assert len(receiver.requests) == 1
    assert caught.value.retryable is False


@pytest.mark.integration
@pytest.mark.parametrize("code", [408, 425, 429, 500, 502, 503, 504])
def test_transient_status_is_retried_and_stays_retryable(receiver, make_sink, sleeps, code):
    receiver.will_answer(*[status(code)] * 2)

    with pytest.raises(SinkDeliveryError) as caught:
        make_sink(max_attempts=2).deliver(make_event())

    assert len(receiver.requests) == 2
    assert caught.value.retryable is True


@pytest.mark.integration
def test_401_points_at_the_secret(receiver, make_sink):
    receiver.will_answer(status(401))

    with pytest.raises(SinkDeliveryError) as caught:
        make_sink().deliver(make_event())

    assert caught.value.retryable is False
    assert "HOKUSAI_WEBHOOK_SECRET" in caught.value.one_line()
    assert len(receiver.requests) == 1


@pytest.mark.integration
@pytest.mark.parametrize(
    ("retry_after", "backoff_max", "expected"),
    [
        ("7", 30.0, 7.0),
        ("120", 5.0, 5.0),  # capped at backoff_max
    ],
)
def test_429_honours_retry_after_seconds(receiver, make_sink, sleeps, retry_after, backoff_max, expected):
    receiver.will_answer(status(429, headers={"Retry-After": retry_after}), status(200))

    make_sink(backoff_max=backoff_max).deliver(make_event())

    assert len(receiver.requests) == 2
    assert sleeps.calls == [expected]


@pytest.mark.integration
def test_503_honours_retry_after_http_date(receiver, make_sink, sleeps):
    when = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=20)
    receiver.will_answer(status(503, headers={"Retry-After": format_datetime(when, usegmt=True)}), status(200))

    make_sink().deliver(make_event())

    assert len(receiver.requests) == 2
    [waited] = sleeps.calls
    assert 15.0 <= waited <= 20.0


@pytest.mark.integration
def test_gives_up_after_max_attempts_as_retryable(receiver, make_sink, sleeps, caplog):
    receiver.will_answer(status(503))
    event = make_event()

    with (
        caplog.at_level(logging.WARNING, logger="hokusai_action.events.webhook"),
        pytest.raises(SinkDeliveryError) as caught,
    ):
        make_sink(max_attempts=3).deliver(event)

    assert len(receiver.requests) == 3
    assert len(sleeps.calls) == 2  # no pointless wait after the last attempt
    error = caught.value
    assert error.retryable is True
    assert "3/3" in str(error)
    assert "HTTP 503" in str(error)
    assert event.id in str(error)
    assert len([r for r in caplog.records if "retrying" in r.getMessage()]) == 2


@pytest.mark.integration
def test_a_timeout_is_retried(receiver, make_sink, secret):
    receiver.will_answer(receiver.hang(5.0), status(200))
    event = make_event()

    started = time.monotonic()
    make_sink(timeout=0.3).deliver(event)

    assert time.monotonic() - started < 3.0
    assert len(receiver.requests) == 2
    for received in receiver.requests:
        assert_signed_cloudevent(received, secret=secret, event=event)


@pytest.mark.integration
def test_timeouts_on_every_attempt_end_retryable(receiver, make_sink):
    receiver.will_answer(receiver.hang(5.0))

    with pytest.raises(SinkDeliveryError) as caught:
        make_sink(timeout=0.2, max_attempts=2).deliver(make_event())

    assert caught.value.retryable is True
    assert "timeout" in str(caught.value)
    assert "2/2" in str(caught.value)


@pytest.mark.integration
def test_connection_refused_is_retried(secret, sleeps):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # nothing listens on the port now
    sink = WebhookSink(f"http://127.0.0.1:{port}/hook", secret, timeout=1.0, max_attempts=3, sleep=sleeps)

    with pytest.raises(SinkDeliveryError) as caught:
        sink.deliver(make_event())
    sink.close()

    assert caught.value.retryable is True
    assert "connection error" in str(caught.value)
    assert len(sleeps.calls) == 2


@pytest.mark.integration
def test_a_redirect_is_not_followed(receiver, make_sink, sleeps):
    elsewhere = receiver.server.url_for("/elsewhere")
    receiver.server.expect_request("/elsewhere").respond_with_data("should never be reached")
    receiver.will_answer(status(302, headers={"Location": elsewhere + "?token=abc"}))

    with pytest.raises(SinkDeliveryError) as caught:
        make_sink().deliver(make_event())

    assert [r.path for r in receiver.requests] == [HOOK_PATH]
    assert all(request.path != "/elsewhere" for request, _ in receiver.server.log)
    assert sleeps.calls == []
    error = caught.value
    assert error.retryable is False
    assert "redirects" in str(error)
    assert "HTTP 302" in str(error)
    assert "/elsewhere" in str(error)
    assert "token=abc" not in str(error)  # a query may carry a credential


@pytest.mark.integration
def test_real_backoff_sleeps_briefly(receiver, secret):
    receiver.will_answer(status(502), status(503), status(204))
    event = make_event()
    sink = WebhookSink(receiver.url, secret, timeout=2.0, backoff_base=0.05, backoff_max=0.2)

    started = time.monotonic()
    sink.deliver(event)
    elapsed = time.monotonic() - started
    sink.close()

    assert len(receiver.requests) == 3
    assert elapsed < 2.0  # at most 0.05 + 0.1 s of jitter plus three loopback round trips
    for received in receiver.requests:
        assert_signed_cloudevent(received, secret=secret, event=event)


# --- answers that never end --------------------------------------------------------------------------
# The sink reads at most a short prefix of any answer's body (to explain a rejection), and each attempt
# ends within its timeout whatever the receiver does: a per-read timeout alone never fires while bytes
# keep coming.


def delivered_within(sink: WebhookSink, event: CloudEventRecord, seconds: float) -> tuple[BaseException | None, float]:
    """Deliver in a thread (so a sink that never ends fails this test rather than hanging it)."""
    outcome: list[BaseException | None] = []

    def deliver() -> None:
        try:
            sink.deliver(event)
        except BaseException as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    started = time.monotonic()
    worker = threading.Thread(target=deliver, daemon=True)
    worker.start()
    worker.join(seconds)
    assert outcome, f"the delivery was still running after {seconds} s"
    return outcome[0], time.monotonic() - started


def delivered_with_peak_memory(url: str, secret: str, sleeps) -> tuple[BaseException | None, float, int]:
    """``delivered_within`` 60 s by a new sink to ``url``, and the peak of what Python allocated meanwhile."""
    import tracemalloc

    sink = WebhookSink(url, secret, timeout=5.0, sleep=sleeps)
    tracemalloc.start()
    try:
        error, elapsed = delivered_within(sink, make_event(), 60)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        sink.close()
    return error, elapsed, peak


@pytest.mark.integration
@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_an_endless_body_after_2xx_is_not_read(secret, sleeps, tmp_path, monkeypatch, tls):
    files = make_tls_files(tmp_path / "tls") if tls else None
    if files is not None:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(files.ca))
    with RawReceiver(endless_chunked("200 OK", limit=64 * MIB), tls=files and files.server_context()) as hook:
        error, elapsed, peak = delivered_with_peak_memory(hook.url, secret, sleeps)

    assert error is None  # a 2xx is a delivery, whatever follows it
    assert hook.requests == 1 and sleeps.calls == []
    assert peak < 2 * MIB, f"the sink held {peak / MIB:.1f} MiB of an answer it has no use for"
    assert elapsed < 3


@pytest.mark.integration
def test_an_endless_body_after_4xx_gives_a_short_excerpt(secret, sleeps):
    answer = endless_chunked("400 Bad Request", piece=b"no such hook; " * 4096, limit=64 * MIB)
    with RawReceiver(answer) as hook:
        error, elapsed, peak = delivered_with_peak_memory(hook.url, secret, sleeps)

    assert isinstance(error, SinkDeliveryError) and error.retryable is False
    assert "HTTP 400" in str(error) and "The receiver said: no such hook; no such hook;" in str(error)
    assert len(error.one_line()) < 1000
    assert peak < 2 * MIB
    assert elapsed < 3


@pytest.mark.integration
@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
@pytest.mark.parametrize(
    ("head", "expected"),
    [
        # the status line, then a header a byte at a time: no answer yet, so a timeout, retried
        (b"HTTP/1.1 200 OK\r\nX-Slow: ", "retried"),
        # a 410 whose body trickles: the rejection stands, without waiting for the excerpt
        (b"HTTP/1.1 410 Gone\r\nContent-Length: 100000\r\n\r\n", "dead letter"),
    ],
    ids=["head", "body"],
)
def test_an_answer_trickled_a_byte_at_a_time_ends_at_the_attempt_timeout(
    secret, sleeps, tmp_path, monkeypatch, head, expected, tls
):
    files = make_tls_files(tmp_path / "tls") if tls else None
    if files is not None:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(files.ca))
    # a byte every 0.1 s: far inside the per-read timeout, so only a bound on the attempt ends it
    with RawReceiver(trickled(head), pause=0.1, tls=files and files.server_context()) as hook:
        sink = WebhookSink(hook.url, secret, timeout=1.0, max_attempts=2, sleep=sleeps)
        try:
            error, elapsed = delivered_within(sink, make_event(), 30)
        finally:
            sink.close()

    assert isinstance(error, SinkDeliveryError)
    if expected == "retried":
        assert error.retryable is True
        assert "no answer within the 1 s timeout" in str(error)
        assert hook.requests == 2 and elapsed < 2 * 1.0 + 1.5
    else:
        assert error.retryable is False
        assert "HTTP 410" in str(error)
        assert hook.requests == 1 and elapsed < 1.0 + 1.5


# --- secrets stay secret -----------------------------------------------------------------------------


@pytest.mark.integration
def test_secret_and_url_password_never_shown(receiver, secret, sleeps, caplog):
    password = "hunter2-" + secrets.token_hex(8)
    url = receiver.url.replace("http://", f"http://hook-user:{password}@")
    # a careless receiver echoes what it was given: the message built from its answer must not leak
    receiver.will_answer(status(503), status(403, body=f"bad secret {secret} for {url}"))

    with caplog.at_level(logging.DEBUG, logger="hokusai_action.events.webhook"):
        sink = WebhookSink(url, secret, timeout=2.0, sleep=sleeps)
        with pytest.raises(SinkDeliveryError) as caught:
            sink.deliver(make_event())
    sink.close()

    # the password reached the receiver as basic auth, as the user asked ...
    assert "Authorization" in receiver.requests[0].headers
    # ... and is shown nowhere
    shown = [str(caught.value), caught.value.one_line(), repr(caught.value), repr(sink), caplog.text]
    for text in shown:
        assert secret not in text
        assert secret.removeprefix("whsec_") not in text
        assert password not in text
    assert "http://***@" in repr(sink)  # a URL's user-info is masked whole (user and password)
    assert "***" in str(caught.value)


@pytest.mark.integration
def test_repr_hides_the_secret(secret):
    sink = WebhookSink("https://hooks.example.com/hokusai", secret)

    assert secret not in repr(sink)
    assert secret.removeprefix("whsec_") not in repr(sink)
    assert "hooks.example.com" in repr(sink)
    sink.close()


# --- construction ------------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/hokusai",
        "http://127.0.0.1:8080/hook",
        "http://127.9.9.9/hook",
        "http://[::1]:8080/hook",
        "http://localhost:8080/hook",
        "http://LOCALHOST/hook",
    ],
)
def test_accepts_https_and_loopback_http(url, secret):
    WebhookSink(url, secret).close()


@pytest.mark.integration
@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://hooks.example.com/hokusai", "plain http"),
        ("http://10.0.0.5/hook", "plain http"),
        ("http://localhost.example.com/hook", "plain http"),
        ("ftp://hooks.example.com/hokusai", "only https"),
        ("hooks.example.com/hokusai", "only https"),
        ("https:///no-host", "no host"),
        ("https://hooks.example.com:99999/hook", "not a valid"),
        ("https://hooks.example.com/a b", "whitespace"),
        ("", "empty"),
    ],
)
def test_refuses_bad_urls_at_construction(url, expected, secret):
    with pytest.raises(InputError) as caught:
        WebhookSink(url, secret)

    assert expected in str(caught.value)
    assert caught.value.exit_code == EXIT_BAD_INPUT
    assert "HOKUSAI_WEBHOOK_URL" in caught.value.one_line()


@pytest.mark.integration
def test_insecure_http_can_be_allowed_explicitly(secret):
    WebhookSink("http://hooks.example.com/hokusai", secret, allow_insecure_http=True).close()


@pytest.mark.integration
def test_url_password_is_redacted_in_construction_errors(secret):
    with pytest.raises(InputError) as caught:
        WebhookSink("http://user:s3cr3t-pass@hooks.example.com/hook", secret)

    assert "s3cr3t-pass" not in caught.value.one_line()
    assert "http://***@hooks.example.com" in str(caught.value)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("bad_secret", "expected"),
    [
        ("", "empty"),
        ("c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0", "does not start with 'whsec_'"),
        ("whsec_not*base64!at-all#####", "base64"),
        ("whsec_" + base64.b64encode(b"short-key").decode(), "9 bytes"),
    ],
)
def test_refuses_bad_secrets_without_echoing_them(bad_secret, expected):
    with pytest.raises(InputError) as caught:
        WebhookSink("https://hooks.example.com/hokusai", bad_secret)

    error = caught.value
    assert expected in str(error)
    assert "HOKUSAI_WEBHOOK_SECRET" in error.one_line()
    assert error.__cause__ is None
    if bad_secret:
        assert bad_secret not in error.one_line()
        assert bad_secret.removeprefix("whsec_") not in error.one_line()


@pytest.mark.integration
def test_accepts_an_unpadded_secret(receiver, sleeps):
    key = secrets.token_bytes(32)
    unpadded = "whsec_" + base64.b64encode(key).decode().rstrip("=")
    assert not unpadded.endswith("=")
    sink = WebhookSink(receiver.url, unpadded, sleep=sleeps)

    sink.deliver(make_event())
    sink.close()

    Webhook(key).verify(receiver.requests[0].body, receiver.requests[0].headers)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("option", "value"),
    [("timeout", 0), ("timeout", float("nan")), ("max_attempts", 0), ("backoff_base", -1)],
)
def test_refuses_bad_options(option, value, secret):
    with pytest.raises(InputError) as caught:
        WebhookSink("https://hooks.example.com/hokusai", secret, **{option: value})

    assert option in str(caught.value)


# --- Retry-After parsing (pure) ----------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("0", 0.0),
        (" 12 ", 12.0),
        ("-3", None),
        ("soon", None),
        ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),  # in the past: retry now
    ],
)
def test_parse_retry_after(header, expected):
    now = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC).timestamp()

    assert parse_retry_after(header, now=now) == expected
