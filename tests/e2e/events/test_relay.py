"""The relay under concurrency, on SQLite and PostgreSQL: leases, keyset paging, dead letters.

Each test gets a fresh database of each kind and a real webhook receiver (pytest-httpserver); the
relays are `deliver_pending` calls in threads, each with its own engine, as two relay processes
would have. The `events relay` / `events retry` command lines are covered in test_events.py.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from hokusai_action.db import outbox
from hokusai_action.db.schema import event_deliveries, events, tokens
from hokusai_action.db.store import APPLICATION_NAME, Database, get_token, insert_token, reset_token, utcnow
from hokusai_action.domain.event import CloudEventRecord
from hokusai_action.errors import TokenStateError
from hokusai_action.events.webhook import WebhookSink
from tests.event_sinks import SECRET, Receiver
from tests.helpers import cli_command, run_captured, start_cli, user_env
from tests.raw_receiver import MIB, RawReceiver, endless_chunked
from tests.services import create_database, drop_database

pytestmark = [pytest.mark.integration]

SINKS = ("webhook", "database")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'relay.db'}"
        return
    url = create_database("hokusai_relay")
    try:
        yield url
    finally:
        drop_database(url)


@pytest.fixture
def fresh_db(database_url: str) -> Iterator[Database]:
    database = Database(database_url, timeout=10)
    database.upgrade()
    yield database
    database.dispose()


def hold(uow, token_id: str, event_id: str) -> None:
    """What a registration's commit writes on the token: registered, holding ``event_id``."""
    uow.execute(
        tokens.update()
        .where(tokens.c.token_id == token_id)
        .values(
            model_status="registered",
            event_id=event_id,
            registration_count=tokens.c.registration_count + 1,
        )
    )


def commit_registration(uow, token_id: str, n: int = 0, *, sinks: tuple[str, ...] = SINKS) -> str:
    """A registration of ``token_id`` (a draft, or one whose earlier registration was reset): the token
    holds its new event, committed to the outbox with one delivery row per sink."""
    event = CloudEventRecord(
        id=str(uuid.uuid4()), source="test", time="2026-01-01T00:00:00Z", subject=token_id, data={"n": n}
    )
    hold(uow, token_id, event.id)
    outbox.add_event(uow, event, token_id=token_id, sinks=sinks)
    return event.id


def commit_events(database: Database, count: int, *, sinks: tuple[str, ...] = SINKS) -> list[str]:
    """Commit ``count`` registrations, one new token each; their event ids."""
    ids = []
    with database.unit_of_work() as uow:
        for n in range(count):
            token_id = f"T{uuid.uuid4().hex[:8]}".upper()
            insert_token(uow, token_id)
            ids.append(commit_registration(uow, token_id, n, sinks=sinks))
        uow.commit()
    return ids


def reset_and_register_again(database: Database, token_id: str) -> tuple[list[dict], str]:
    """`token reset` (what it cancels), then a new registration of the token; its event id. A reset
    refused while the earlier event is on its way is tried again once the relay has sent it."""
    deadline = time.monotonic() + 60
    while True:
        try:
            with database.unit_of_work() as uow:
                reset_token(uow, token_id, url="test")
                cancelled = outbox.cancel_undelivered(uow, token_id, reason="test reset")
                event_id = commit_registration(uow, token_id)
                uow.commit()
            return cancelled, event_id
        except TokenStateError:
            assert time.monotonic() < deadline, "the reset was refused for a minute"
            time.sleep(0.05)


@pytest.fixture
def add_events(fresh_db: Database) -> Callable[..., list[str]]:
    """Commit ``count`` registrations' events, one new token each."""

    def add(count: int, *, sinks: tuple[str, ...] = SINKS) -> list[str]:
        return commit_events(fresh_db, count, sinks=sinks)

    return add


def webhook(url: str) -> WebhookSink:
    return WebhookSink(url, SECRET, timeout=10, max_attempts=1, allow_insecure_http=True)


@contextlib.contextmanager
def relay_of_its_own(database_url: str, webhook_url: str) -> Iterator[tuple[Database, WebhookSink]]:
    """What a relay process holds: an engine and a webhook sink of its own, closed when it is done."""
    database = Database(database_url, timeout=10)
    sink = webhook(webhook_url)
    try:
        yield database, sink
    finally:
        sink.close()
        database.dispose()


def side_by_side(relay: Callable[..., None], arguments: list[tuple], *, timeout: float) -> None:
    """Run ``relay`` in one thread per tuple of ``arguments``, all at once, and wait for them."""
    threads = [threading.Thread(target=relay, args=args) for args in arguments]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)


def rows(database: Database) -> dict[tuple[str, str], dict]:
    with database.unit_of_work() as uow:
        found = uow.execute(sa.select(event_deliveries)).all()
    return {(str(r.event_id), r.sink): dict(r._mapping) for r in found}


def set_webhook_delivery(database: Database, event_id: str, **values: Any) -> None:
    """Set columns of ``event_id``'s webhook delivery, as another relay or an earlier attempt left them."""
    with database.unit_of_work() as uow:
        uow.execute(
            event_deliveries.update()
            .where(event_deliveries.c.event_id == event_id, event_deliveries.c.sink == "webhook")
            .values(**values)
        )
        uow.commit()


def posted_ids(receiver: Receiver) -> Counter:
    return Counter(json.loads(body)["id"] for _, body in receiver.requests)


def relay_env(database_url: str, webhook_url: str, cwd: Path, **extra_env: str) -> dict[str, str]:
    """The environment of an `events relay` delivering to ``webhook_url`` and the database."""
    return {
        **user_env(),
        "HOKUSAI_DATABASE_URL": database_url,
        "HOKUSAI_EVENT_SINKS": "webhook,database",
        "HOKUSAI_WEBHOOK_URL": webhook_url,
        "HOKUSAI_WEBHOOK_SECRET": SECRET,
        "HOKUSAI_HOME": str(cwd / ".hokusai"),
        **extra_env,
    }


def start_follow_relay(
    database_url: str, webhook_url: str, cwd: Path, *, interval: float, args: tuple[str, ...] = (), **extra_env: str
) -> subprocess.Popen:
    """`events relay --follow` as a subprocess, delivering to ``webhook_url`` (and the database)."""
    env = relay_env(database_url, webhook_url, cwd, **extra_env)
    return start_cli("events", "relay", "--follow", "--interval", str(interval), *args, env=env, cwd=cwd)


def test_two_relays_deliver_each_event_exactly_once(fresh_db, database_url, add_events, httpserver):
    event_ids = add_events(8)
    receiver = Receiver(httpserver, delay=0.15)  # slow enough that the relays overlap
    start = threading.Barrier(2)
    reports = []

    def relay() -> None:
        with relay_of_its_own(database_url, receiver.url) as (database, sink):
            start.wait()
            reports.append(outbox.deliver_pending(database, {"webhook": sink}, batch_size=3))

    side_by_side(relay, [(), ()], timeout=120)

    assert posted_ids(receiver) == Counter(event_ids)  # each event POSTed exactly once
    delivered = [event_id for report in reports for event_id, _ in report.delivered]
    assert sorted(delivered) == sorted(event_ids)
    assert all(r["status"] == "delivered" and r["attempts"] == 1 for r in rows(fresh_db).values())
    assert all(r["lease_owner"] is None for r in rows(fresh_db).values())


def test_a_slow_page_never_outlives_its_leases(fresh_db, database_url, add_events, httpserver):
    """Leases are renewed row by row: rows whose lease ran out while earlier rows were being sent are
    either still ours (renewed) or were taken by another relay, and are then sent by it alone."""

    event_ids = add_events(3)  # three tokens, so no order holds one back
    receiver = Receiver(httpserver, delay=0.7)
    reports = []

    def relay(start_after: float) -> None:
        with relay_of_its_own(database_url, receiver.url) as (database, sink):
            time.sleep(start_after)
            reports.append(outbox.deliver_pending(database, {"webhook": sink}, lease_seconds=1.0))

    side_by_side(relay, [(0.0,), (1.2,)], timeout=60)

    assert posted_ids(receiver) == Counter(event_ids)  # each exactly once, whichever relay sent it
    assert all(r["status"] == "delivered" and r["lease_owner"] is None for r in rows(fresh_db).values())


def test_a_receiver_slower_than_the_lease_gets_the_event_once(fresh_db, database_url, add_events, httpserver):
    """The lease is renewed while the send is in flight: a second relay, polling meanwhile, never
    finds it expired and never sends the row too."""
    (event_id,) = add_events(1)
    receiver = Receiver(httpserver, delay=3.0)  # three leases long
    reports = []

    def relay(start_after: float) -> None:
        with relay_of_its_own(database_url, receiver.url) as (database, sink):
            time.sleep(start_after)
            deadline = time.monotonic() + 6
            while time.monotonic() < deadline:  # keeps passing over the table while the first one sends
                reports.append(outbox.deliver_pending(database, {"webhook": sink}, lease_seconds=1.0))
                time.sleep(0.1)

    side_by_side(relay, [(0.0,), (0.5,)], timeout=60)

    assert posted_ids(receiver) == Counter([event_id])
    assert [d for report in reports for d in report.delivered] == [(event_id, "webhook")]
    row = rows(fresh_db)[(event_id, "webhook")]
    assert (row["status"], row["attempts"], row["lease_owner"], row["sending_since"]) == ("delivered", 1, None, None)


def test_a_reset_cancels_what_a_relay_has_leased_and_refuses_what_it_is_sending(
    fresh_db, database_url, add_events, httpserver
):
    """One relay, one page of two tokens' events, sent one after the other: while the first is on its
    way, resetting its token is refused (exit 3's error) and changes nothing; resetting the second
    token cancels its leased, unsent delivery, and the relay never sends it."""
    add_events(2)
    receiver = Receiver(httpserver, delay=2.0)
    reports = []

    def relay() -> None:
        database = Database(database_url, timeout=10)
        try:
            reports.append(outbox.deliver_pending(database, {"webhook": webhook(receiver.url)}))
        finally:
            database.dispose()

    thread = threading.Thread(target=relay)
    thread.start()
    wait_until(lambda: len(receiver.requests) == 1, what="the first POST")
    sending = json.loads(receiver.requests[0][1])["id"]
    with fresh_db.unit_of_work() as uow:
        owners = {str(e): t for e, t in uow.execute(sa.select(events.c.event_id, events.c.token_id))}
    (leased,) = [e for e in owners if e != sending]

    def reset(event_id: str) -> list[dict]:
        with fresh_db.unit_of_work() as uow:
            reset_token(uow, owners[event_id], url="test")
            cancelled = outbox.cancel_undelivered(uow, owners[event_id], reason="test reset")
            uow.commit()
        return cancelled

    with pytest.raises(TokenStateError, match=f"event {sending} is being sent to webhook by a relay right now"):
        reset(sending)
    assert [(c["event_id"], c["sink"], c["previous_status"]) for c in reset(leased)] == [(leased, "webhook", "pending")]
    thread.join(timeout=60)

    assert posted_ids(receiver) == Counter([sending])
    assert reports[0].delivered == [(sending, "webhook")]
    state = rows(fresh_db)
    assert state[(sending, "webhook")]["status"] == "delivered"
    assert (state[(leased, "webhook")]["status"], state[(leased, "webhook")]["lease_owner"]) == ("cancelled", None)
    with fresh_db.unit_of_work() as uow:
        assert get_token(uow, owners[sending]).model_status == "registered"  # the refused reset changed nothing


def test_a_lease_held_by_a_live_relay_is_not_taken(fresh_db, add_events, httpserver):
    (event_id,) = add_events(1)
    set_webhook_delivery(
        fresh_db, event_id, lease_owner="relay:other:1:live", lease_until=utcnow() + dt.timedelta(minutes=5)
    )
    receiver = Receiver(httpserver)

    report = outbox.deliver_pending(fresh_db, {"webhook": webhook(receiver.url)})

    assert receiver.requests == []
    assert report.delivered == [] and report.waiting == 1 and report.pending == 1
    row = rows(fresh_db)[(event_id, "webhook")]
    assert (row["status"], row["lease_owner"], row["attempts"]) == ("pending", "relay:other:1:live", 0)


def test_an_expired_lease_of_a_killed_relay_is_taken_over(fresh_db, add_events, httpserver):
    (event_id,) = add_events(1)
    set_webhook_delivery(
        fresh_db, event_id, lease_owner="relay:gone:1:killed", lease_until=utcnow() - dt.timedelta(seconds=1)
    )
    receiver = Receiver(httpserver)

    report = outbox.deliver_pending(fresh_db, {"webhook": webhook(receiver.url)})

    assert report.delivered == [(event_id, "webhook")]
    assert posted_ids(receiver) == Counter([event_id])
    row = rows(fresh_db)[(event_id, "webhook")]
    assert (row["status"], row["lease_owner"]) == ("delivered", None)


def test_a_live_lease_of_a_relay_killed_here_is_taken_over_at_once(fresh_db, add_events, httpserver):
    """A relay SIGKILLed mid-delivery on this machine is provably dead: its lease is not waited out."""

    from hokusai_action.db.owner import claim_owner_id

    probe = "from hokusai_action.db.owner import claim_owner_id; print(claim_owner_id())"
    dead = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
    alive = claim_owner_id()  # this very process: alive, so its lease holds
    dead_event, live_event = add_events(2)
    with fresh_db.unit_of_work() as uow:
        for event_id, owner in ((dead_event, dead), (live_event, alive)):
            uow.execute(
                event_deliveries.update()
                .where(event_deliveries.c.event_id == event_id, event_deliveries.c.sink == "webhook")
                .values(lease_owner=owner, lease_until=utcnow() + dt.timedelta(minutes=2))
            )
        uow.commit()
    receiver = Receiver(httpserver)

    report = outbox.deliver_pending(fresh_db, {"webhook": webhook(receiver.url)})

    assert posted_ids(receiver) == Counter([dead_event])
    assert report.delivered == [(dead_event, "webhook")] and report.waiting == 1
    assert rows(fresh_db)[(dead_event, "webhook")]["status"] == "delivered"
    assert rows(fresh_db)[(live_event, "webhook")]["lease_owner"] == alive


def test_unconfigured_sink_rows_are_counted_not_leased_and_pages_cover_every_row(fresh_db, add_events, httpserver):
    pubsub_only = add_events(7, sinks=("pubsub", "database"))
    ours = add_events(5)
    receiver = Receiver(httpserver)

    report = outbox.deliver_pending(fresh_db, {"webhook": webhook(receiver.url)}, batch_size=2)

    assert posted_ids(receiver) == Counter(ours)
    assert report.skipped == {"pubsub": 7}
    assert report.pending == 7
    state = rows(fresh_db)
    assert all(state[(e, "pubsub")]["lease_owner"] is None for e in pubsub_only)
    assert all(state[(e, "pubsub")]["attempts"] == 0 for e in pubsub_only)


def test_an_event_the_token_no_longer_holds_is_cancelled_and_never_sent(fresh_db, httpserver):
    """The site resets a token (deliveries untouched) and it is registered again: the relay cancels the
    first registration's delivery, with the reason, instead of sending it; the new one is sent."""
    with fresh_db.unit_of_work() as uow:
        insert_token(uow, "AGAIN")
        first = commit_registration(uow, "AGAIN")
        uow.commit()
    receiver = Receiver(httpserver, statuses=[503])  # the first event's only attempt fails
    outbox.deliver_pending(fresh_db, {"webhook": webhook(receiver.url)})
    with fresh_db.unit_of_work() as uow:  # registered again, without `token reset`
        second = commit_registration(uow, "AGAIN")
        uow.commit()

    report = outbox.deliver_pending(fresh_db, {"webhook": webhook(receiver.url)}, event_id=first)
    final = outbox.deliver_pending(fresh_db, {"webhook": webhook(receiver.url)}, event_id=second)

    assert [json.loads(body)["id"] for _, body in receiver.requests] == [first, second]  # the 503, then the new
    assert report.delivered == [] and report.pending == 0
    (cancelled,) = report.cancelled
    assert cancelled[:2] == (first, "webhook")
    assert (
        f"token AGAIN no longer holds this registration (it now holds the registration of event {second})"
        in (cancelled[2])
    )
    assert final.delivered == [(second, "webhook")]
    row = rows(fresh_db)[(first, "webhook")]
    assert (row["status"], row["lease_owner"], row["sending_since"]) == ("cancelled", None, None)
    assert row["cancel_reason"] == cancelled[2]


@pytest.mark.parametrize("refusal", [400, 404, 410])
def test_transient_failure_backs_off_and_permanent_failure_is_a_dead_letter(fresh_db, add_events, httpserver, refusal):
    transient, permanent = add_events(2)
    receiver = Receiver(httpserver)
    httpserver.clear()
    statuses = {transient: 503, permanent: refusal}
    seen = []

    def handle(request):
        from werkzeug import Response

        event_id = json.loads(request.get_data())["id"]
        seen.append(event_id)
        return Response("no", status=statuses.get(event_id, 200))

    httpserver.expect_request("/hook", method="POST").respond_with_handler(handle)

    report = outbox.deliver_pending(fresh_db, {"webhook": webhook(receiver.url)})

    state = rows(fresh_db)
    assert state[(transient, "webhook")]["status"] == "pending"
    assert state[(transient, "webhook")]["next_attempt_at"] is not None
    assert state[(permanent, "webhook")]["status"] == "failed"
    assert f"HTTP {refusal}" in state[(permanent, "webhook")]["last_error"]
    assert [d[:2] for d in report.dead_letters] == [(permanent, "webhook")]
    assert [r[:2] for r in report.retrying] == [(transient, "webhook")]

    # the relay skips the dead letter and waits out the backoff: nothing is sent again
    later = outbox.deliver_pending(fresh_db, {"webhook": webhook(receiver.url)})
    assert sorted(seen) == sorted([transient, permanent])  # one POST each
    assert later.pending == 2

    # the operator fixes the receiver and re-queues the dead letter: delivered once more, same id
    statuses.clear()
    requeued, cancelled = outbox.requeue_failed(fresh_db, event_id=permanent)
    assert [d[:2] for d in requeued] == [(permanent, "webhook")] and cancelled == []
    final = outbox.deliver_pending(fresh_db, {"webhook": webhook(receiver.url)})
    assert final.delivered == [(permanent, "webhook")]
    assert rows(fresh_db)[(permanent, "webhook")]["status"] == "delivered"


def test_a_dead_letter_of_a_withdrawn_registration_is_cancelled_not_left_for_retry(fresh_db, add_events, httpserver):
    (event_id,) = add_events(1)
    refusing = Receiver(httpserver, statuses=[410])
    outbox.deliver_pending(fresh_db, {"webhook": webhook(refusing.url)})
    assert rows(fresh_db)[(event_id, "webhook")]["status"] == "failed"
    with fresh_db.unit_of_work() as uow:  # the site's own reset: the token only
        uow.execute(tokens.update().where(tokens.c.event_id == event_id).values(model_status="draft"))
        uow.commit()

    report = outbox.deliver_pending(fresh_db, {"webhook": webhook(refusing.url)})

    assert report.dead_letters == [] and report.pending == 0  # not waiting for an `events retry`
    assert [c[:2] for c in report.cancelled] == [(event_id, "webhook")]
    assert "no longer holds this registration (it is draft)" in report.cancelled[0][2]
    assert rows(fresh_db)[(event_id, "webhook")]["status"] == "cancelled"
    assert outbox.requeue_failed(fresh_db, event_id=event_id) == ([], [])
    assert len(refusing.requests) == 1


def test_an_interrupted_relay_hands_its_leases_back(fresh_db, add_events):
    (event_id,) = add_events(1)

    class Interrupted:
        name = "webhook"

        def deliver(self, event: CloudEventRecord) -> None:
            raise SystemExit(143)  # what the CLI's SIGTERM handler raises

        def close(self) -> None:
            return None

    with pytest.raises(SystemExit):
        outbox.deliver_pending(fresh_db, {"webhook": Interrupted()})

    row = rows(fresh_db)[(event_id, "webhook")]
    assert (row["status"], row["lease_owner"], row["lease_until"]) == ("pending", None, None)


@pytest.mark.unit
def test_backoff_is_exponential_capped_and_jittered() -> None:

    rng = random.Random(7)
    first = [outbox.backoff_seconds(1, rng=rng) for _ in range(50)]
    assert all(outbox.BACKOFF_BASE_SECONDS / 2 <= d <= outbox.BACKOFF_BASE_SECONDS for d in first)
    assert len(set(first)) > 1  # jitter: relays do not retry in step
    fourth = outbox.backoff_seconds(4, rng=rng)
    assert 4 * outbox.BACKOFF_BASE_SECONDS <= fourth <= 8 * outbox.BACKOFF_BASE_SECONDS
    assert outbox.backoff_seconds(1000, rng=rng) <= outbox.BACKOFF_MAX_SECONDS


@pytest.mark.e2e
def test_relay_follow_delivers_what_arrives_until_stopped(fresh_db, database_url, add_events, httpserver, tmp_path):
    """`events relay --follow` keeps delivering events committed after it started; SIGTERM stops it."""

    receiver = Receiver(httpserver)
    first = add_events(1)
    relay = start_follow_relay(database_url, receiver.url, tmp_path, interval=0.2)
    try:
        deadline = time.monotonic() + 60
        while posted_ids(receiver) != Counter(first) and time.monotonic() < deadline:
            time.sleep(0.1)
        second = add_events(2)  # committed while the relay is already running
        while posted_ids(receiver) != Counter(first + second) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.6)  # a few idle passes: nothing more is sent
    finally:
        relay.send_signal(signal.SIGTERM)
        out, err = relay.communicate(timeout=30)
    assert posted_ids(receiver) == Counter(first + second)  # each exactly once
    assert relay.returncode == 0, err  # a service stopped on request
    assert "relay stopped by SIGTERM" in err
    assert "Traceback" not in err
    reports = [line for line in out.splitlines() if line.startswith("delivered ")]
    assert reports and len(reports) <= 4, out  # idle passes print nothing
    assert all(r["status"] == "delivered" and r["lease_owner"] is None for r in rows(fresh_db).values())


@pytest.mark.e2e
@pytest.mark.slow
def test_relay_follow_outlives_a_database_outage(httpserver, tmp_path):
    """A pass that cannot reach the database prints one line and the relay carries on."""

    from tests.faults import TcpProxy

    url = create_database("hokusai_follow")
    proxy = TcpProxy(("127.0.0.1", 5432))
    through_proxy = sa.engine.make_url(url).set(host="127.0.0.1", port=proxy.port).render_as_string(False)
    database = Database(url, timeout=10)
    relay = None
    try:
        database.upgrade()
        receiver = Receiver(httpserver)
        relay = start_follow_relay(through_proxy, receiver.url, tmp_path, interval=0.3, HOKUSAI_DATABASE_TIMEOUT="2")
        time.sleep(2)
        proxy.cut()
        time.sleep(3)  # passes fail: the database does not answer
        proxy.restore()
        (event_id,) = commit_events(database, 1)
        deadline = time.monotonic() + 60
        while posted_ids(receiver) != Counter([event_id]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert relay.poll() is None, "the relay stopped"
    finally:
        if relay is not None:
            relay.send_signal(signal.SIGTERM)
            _, err = relay.communicate(timeout=30)
        proxy.close()
        database.dispose()
        drop_database(url)
    assert posted_ids(receiver) == Counter([event_id])
    outage_lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert outage_lines and all("trying again" in line for line in outage_lines), err
    assert "Traceback" not in err


# ------------------------------------------------------------------------- the relay as a service


class TimedReceiver(Receiver):
    """A Receiver that also notes when each event id arrived (time.monotonic)."""

    def __init__(self, httpserver, statuses=(), delay: float = 0.0) -> None:
        self.arrived: dict[str, float] = {}
        super().__init__(httpserver, statuses=statuses, delay=delay)

    def handle(self, request):
        self.arrived.setdefault(json.loads(request.get_data())["id"], time.monotonic())
        return super().handle(request)


def wait_until(condition: Callable[[], bool], *, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def stop(relay: subprocess.Popen, signum: int = signal.SIGTERM) -> tuple[str, str]:
    if relay.poll() is None:
        relay.send_signal(signum)
    return relay.communicate(timeout=60)


def listening_connections(database_url: str) -> int:
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as connection:
            return connection.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = :name "
                    "AND datname = current_database() AND query = :listen"
                ),
                {"name": APPLICATION_NAME, "listen": f"LISTEN {outbox.NOTIFY_CHANNEL}"},
            ).scalar_one()
    finally:
        engine.dispose()


@dataclass
class FollowRun:
    """A `--follow` relay on a fresh PostgreSQL site database, after its first delivery."""

    url: str
    database: Database
    receiver: TimedReceiver
    first: list[str]
    relay: subprocess.Popen[str]
    err: str = ""  # the relay's stderr, once the block has stopped it


@contextlib.contextmanager
def follow_relay_on_postgresql(httpserver, tmp_path: Path, name: str, *, interval: float) -> Iterator[FollowRun]:
    """Create the database, commit one event, start the relay and wait for that delivery; stop the relay
    and drop the database however the block ends (``run.err`` then holds the relay's stderr)."""
    url = create_database(name)
    database = Database(url, timeout=10)
    relay = run = None
    try:
        database.upgrade()
        receiver = TimedReceiver(httpserver)
        first = commit_events(database, 1)
        relay = start_follow_relay(url, receiver.url, tmp_path, interval=interval)
        wait_until(lambda: posted_ids(receiver) == Counter(first), what="the first delivery")
        run = FollowRun(url, database, receiver, first, relay)
        yield run
    finally:
        if relay is not None:
            _, err = stop(relay)
            if run is not None:
                run.err = err
        database.dispose()
        drop_database(url)


@pytest.mark.e2e
@pytest.mark.slow
def test_follow_on_postgresql_is_woken_by_the_commits_notify(httpserver, tmp_path):
    """The relay LISTENs on its own connection; an event committed after it has been idle for 7 s
    arrives within a second. Polling could not do that: its backoff is then in a 6.4 s wait (0.1 s
    doubling from the last delivery), and the --interval is 60 s."""

    with follow_relay_on_postgresql(httpserver, tmp_path, "hokusai_listen", interval=60) as run:  # the relay is up
        assert listening_connections(run.url) == 1
        latencies = []
        for idle in (7.0, 1.0):
            time.sleep(idle)
            committed = time.monotonic()
            (event_id,) = commit_events(run.database, 1)
            wait_until(lambda event_id=event_id: event_id in run.receiver.arrived, timeout=90, what="the wake-up")
            latencies.append(run.receiver.arrived[event_id] - committed)
    assert run.relay.returncode == 0, run.err
    assert max(latencies) < 2.0, latencies
    assert all(count == 1 for count in posted_ids(run.receiver).values())


class WithoutNotify:
    """A unit of work seen as another dialect by ``add_event``: its commit sends no NOTIFY, like a
    writer that does not know about the channel, or a NOTIFY sent while no relay was listening."""

    dialect = "silent"

    def __init__(self, uow) -> None:
        self._uow = uow

    def execute(self, *args):
        return self._uow.execute(*args)


@pytest.mark.e2e
def test_follow_on_postgresql_still_finds_an_event_no_notify_announced(httpserver, tmp_path):
    """The events table is the truth: a listening relay passes over it every --interval (1 s here),
    so an event whose NOTIFY it never got is delivered all the same."""

    with follow_relay_on_postgresql(httpserver, tmp_path, "hokusai_missed", interval=1) as run:
        assert listening_connections(run.url) == 1
        with run.database.unit_of_work() as uow:
            insert_token(uow, "SILENT")
            event = CloudEventRecord(id=str(uuid.uuid4()), source="t", time="2026-01-01T00:00:00Z", subject="SILENT")
            hold(uow, "SILENT", event.id)
            outbox.add_event(WithoutNotify(uow), event, token_id="SILENT", sinks=SINKS)
            uow.commit()
        committed = time.monotonic()
        wait_until(lambda: event.id in run.receiver.arrived, timeout=30, what="the safety poll")
    assert run.relay.returncode == 0, run.err
    assert run.receiver.arrived[event.id] - committed < 5.0
    assert posted_ids(run.receiver) == Counter([*run.first, event.id])


@pytest.mark.e2e
@pytest.mark.slow
def test_follow_listens_again_after_its_listen_connection_is_killed(httpserver, tmp_path):
    """An administrator (or a failover) ends the LISTEN connection: the relay notices, passes over the
    table, LISTENs again, and is woken by the next commit as before."""

    with follow_relay_on_postgresql(httpserver, tmp_path, "hokusai_relisten", interval=60) as run:
        admin = sa.create_engine(run.url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as connection:
                killed = connection.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND query = :listen"
                    ),
                    {"listen": f"LISTEN {outbox.NOTIFY_CHANNEL}"},
                ).all()
        finally:
            admin.dispose()  # before the database is dropped
        assert len(killed) == 1
        wait_until(lambda: listening_connections(run.url) == 1, timeout=30, what="a new LISTEN")
        time.sleep(7.0)  # idle: only a NOTIFY can wake it within the 60 s --interval now
        committed = time.monotonic()
        (event_id,) = commit_events(run.database, 1)
        wait_until(lambda: event_id in run.receiver.arrived, timeout=90, what="the wake-up")
    assert run.relay.returncode == 0, run.err
    assert run.receiver.arrived[event_id] - committed < 2.0
    assert "the LISTEN connection dropped" in run.err and "Traceback" not in run.err
    assert posted_ids(run.receiver) == Counter([*run.first, event_id])


@pytest.mark.e2e
def test_follow_on_sqlite_polls_quickly_after_activity(httpserver, tmp_path):
    """No NOTIFY on SQLite: after a delivery the relay polls every 0.1 s, doubling while idle, so an
    event committed shortly after the last one arrives within a second or two, not at the 60 s cap."""

    url = f"sqlite:///{tmp_path / 'poll.db'}"
    database = Database(url, timeout=10)
    database.upgrade()
    receiver = TimedReceiver(httpserver)
    first = commit_events(database, 1)
    relay = start_follow_relay(url, receiver.url, tmp_path, interval=60)
    try:
        wait_until(lambda: posted_ids(receiver) == Counter(first), what="the first delivery")
        latencies = []
        for _ in range(3):
            time.sleep(0.3)
            committed = time.monotonic()
            (event_id,) = commit_events(database, 1)
            wait_until(lambda event_id=event_id: event_id in receiver.arrived, timeout=90, what="a poll")
            latencies.append(receiver.arrived[event_id] - committed)
    finally:
        _, err = stop(relay)
        database.dispose()
    assert relay.returncode == 0, err
    assert max(latencies) < 5.0, latencies
    assert all(count == 1 for count in posted_ids(receiver).values())


@pytest.mark.unit
def test_idle_polling_backs_off_from_short_to_the_interval() -> None:
    backoff = outbox.IdleBackoff(cap=5.0)
    assert backoff.after_pass(active=True) == outbox.POLL_MIN_SECONDS
    idle = [backoff.after_pass(active=False) for _ in range(8)]
    assert idle == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]
    assert backoff.after_pass(active=True) == outbox.POLL_MIN_SECONDS  # activity: short again
    assert outbox.IdleBackoff(cap=0.05).after_pass(active=True) == 0.05  # never above --interval


@pytest.mark.e2e
def test_sigterm_finishes_the_delivery_in_hand_and_hands_the_rest_back(
    database_url, fresh_db, add_events, httpserver, tmp_path
):
    """Stopped mid-page: the POST in flight completes and is recorded, the page's other leases are
    released at once (no lease left held by the stopping relay), exit 0."""

    ids = add_events(4)  # four tokens, one page, one sink: sent one after another
    receiver = Receiver(httpserver, delay=1.5)
    relay = start_follow_relay(database_url, receiver.url, tmp_path, interval=30, HOKUSAI_WEBHOOK_TIMEOUT="10")
    try:
        wait_until(lambda: len(receiver.requests) >= 1, what="the first POST")
    finally:
        _, err = stop(relay)
    assert relay.returncode == 0, err
    assert "relay stopped by SIGTERM" in err and "Traceback" not in err
    state = rows(fresh_db)
    assert posted_ids(receiver) == Counter(ids[:1])  # the one in hand, nothing after the signal
    assert state[(ids[0], "webhook")]["status"] == "delivered"
    for event_id in ids[1:]:
        row = state[(event_id, "webhook")]
        assert (row["status"], row["lease_owner"], row["lease_until"], row["attempts"]) == ("pending", None, None, 0)
    # another relay takes them at once: nothing waits for a lease to expire (and the receiver, slow only
    # so that the signal came mid-POST, now answers at once)
    receiver.delay = 0.0
    report = outbox.deliver_pending(fresh_db, {"webhook": webhook(receiver.url)})
    assert sorted(e for e, _ in report.delivered) == sorted(ids[1:])


@pytest.mark.e2e
def test_two_following_relays_and_a_receiver_slower_than_the_lease_deliver_once(
    database_url, fresh_db, add_events, httpserver, tmp_path
):
    """HOKUSAI_RELAY_LEASE=1 and a receiver that answers after 4 s: the relay sending renews its lease
    while it waits, so the other one, polling every 0.2 s, never takes the row over and sends it too."""
    receiver = Receiver(httpserver, delay=4.0)
    (event_id,) = add_events(1)
    options = {"HOKUSAI_RELAY_LEASE": "1", "HOKUSAI_WEBHOOK_TIMEOUT": "20"}
    relays = [start_follow_relay(database_url, receiver.url, tmp_path, interval=0.2, **options) for _ in range(2)]
    try:
        wait_until(lambda: rows(fresh_db)[(event_id, "webhook")]["status"] == "delivered", what="the delivery")
        time.sleep(2.0)  # room for a second send to show up
    finally:
        outputs = [stop(relay) for relay in relays]
    assert [relay.returncode for relay in relays] == [0, 0], outputs
    assert posted_ids(receiver) == Counter([event_id])
    assert rows(fresh_db)[(event_id, "webhook")]["attempts"] == 1
    assert not any("lease" in err and "expired" in err for _, err in outputs), outputs


def peak_rss_kib(pid: int) -> int:
    """VmHWM of a live process: the most resident memory its own address space has held."""
    status = Path(f"/proc/{pid}/status").read_text(encoding="utf-8")
    return int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE).group(1))


@pytest.mark.e2e
def test_an_endless_answer_keeps_the_relay_small_and_stoppable(database_url, fresh_db, add_events, tmp_path):
    """A receiver that answers 200, then streams a body for ever: the delivery is recorded at once
    (the body is not read), the relay's memory stays small, and SIGTERM stops it at once."""
    (event_id,) = add_events(1)
    with RawReceiver(endless_chunked("200 OK", limit=256 * MIB)) as hook:
        relay = start_follow_relay(database_url, hook.url, tmp_path, interval=30)
        try:
            wait_until(
                lambda: rows(fresh_db)[(event_id, "webhook")]["status"] == "delivered", timeout=30, what="the delivery"
            )
        finally:
            # the peak of the relay's own memory since its exec: a child's rusage also counts the
            # parent's pages it was forked with (a pytest worker holding MLflow: some 450 MB)
            peak_kib = peak_rss_kib(relay.pid)
            asked = time.monotonic()
            relay.send_signal(signal.SIGTERM)
            _, err = relay.communicate(timeout=30)
            stopped_after = time.monotonic() - asked
    assert relay.returncode == 0, err
    assert "relay stopped by SIGTERM" in err and "Traceback" not in err
    assert stopped_after < 5
    assert peak_kib * 1024 < 150 * MIB, f"the relay peaked at {peak_kib / 1024:.0f} MiB"
    assert hook.requests == 1


@pytest.mark.e2e
@pytest.mark.parametrize("ctrl_c", [False, True], ids=["sigterm", "sigint"])
def test_a_stopped_relay_exits_at_once_when_idle(database_url, fresh_db, add_events, httpserver, tmp_path, ctrl_c):
    receiver = Receiver(httpserver)
    ids = add_events(1)
    relay = start_follow_relay(database_url, receiver.url, tmp_path, interval=60)
    wait_until(lambda: posted_ids(receiver) == Counter(ids), what="the delivery")
    time.sleep(0.5)  # now idle, waiting up to 60 s
    asked = time.monotonic()
    _, err = stop(relay, signal.SIGINT if ctrl_c else signal.SIGTERM)
    assert relay.returncode == 0, err
    assert time.monotonic() - asked < 10  # woken by the signal, not by the end of its wait
    assert f"relay stopped by {'SIGINT' if ctrl_c else 'SIGTERM'}" in err and "Traceback" not in err


@pytest.mark.e2e
def test_max_seconds_ends_a_follow_with_the_exit_code_of_a_pass(
    database_url, fresh_db, add_events, httpserver, tmp_path
):
    receiver = Receiver(httpserver)
    delivered = add_events(2)
    relay = start_follow_relay(database_url, receiver.url, tmp_path, interval=60, args=("--max-seconds", "2"))
    started = time.monotonic()
    out, err = relay.communicate(timeout=60)
    assert relay.returncode == 0, err  # everything delivered
    assert 2 <= time.monotonic() - started < 30
    assert posted_ids(receiver) == Counter(delivered)

    # a receiver that refuses for good: a dead letter is left, so a bounded relay exits 5 naming it
    httpserver.clear()
    refusing = Receiver(httpserver, statuses=[410])
    (dead,) = add_events(1)
    relay = start_follow_relay(database_url, refusing.url, tmp_path, interval=60, args=("--max-seconds", "1.5"))
    out, err = relay.communicate(timeout=60)
    assert relay.returncode == 5, (out, err)
    assert f"dead letter {dead} -> webhook" in out


def run_relay_once(database_url: str, webhook_url: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A one-shot `events relay`, delivering to ``webhook_url`` (and the database)."""
    env = relay_env(database_url, webhook_url, cwd)
    return run_captured(cli_command("events", "relay", *args), env=env, cwd=cwd, timeout=120)


def backing_off(database: Database, event_id: str, seconds: float) -> None:
    """The webhook delivery failed once, as a registration whose sink was down leaves it."""
    set_webhook_delivery(
        database, event_id, attempts=1, last_error="HTTP 503", next_attempt_at=utcnow() + dt.timedelta(seconds=seconds)
    )


@pytest.mark.e2e
def test_a_one_shot_relay_waits_out_a_backoff_that_ends_soon(database_url, fresh_db, add_events, httpserver, tmp_path):
    """The operator fixed the sink right after a registration left its event pending: `events relay`
    delivers it (exit 0) instead of reporting it backing off for a few more seconds (exit 5)."""
    (event_id,) = add_events(1)
    backing_off(fresh_db, event_id, 3.0)
    receiver = Receiver(httpserver)

    done = run_relay_once(database_url, receiver.url, tmp_path, "--output", "json")

    assert done.returncode == 0, (done.stdout, done.stderr)
    assert json.loads(done.stdout)["delivered"] == [{"event_id": event_id, "sink": "webhook"}]
    assert posted_ids(receiver) == Counter([event_id])


@pytest.mark.e2e
def test_a_one_shot_relay_says_when_a_long_backoff_ends_and_how_to_send_now(
    database_url, fresh_db, add_events, httpserver, tmp_path
):
    (event_id,) = add_events(1)
    backing_off(fresh_db, event_id, 600.0)
    receiver = Receiver(httpserver)
    started = time.monotonic()

    text = run_relay_once(database_url, receiver.url, tmp_path)
    data = run_relay_once(database_url, receiver.url, tmp_path, "--output", "json")

    assert time.monotonic() - started < 30  # it does not wait ten minutes
    assert (text.returncode, data.returncode) == (5, 5), (text.stdout, text.stderr)
    assert re.search(r"waiting 1 deliveries: the next backoff ends in (59\d|600) s ", text.stdout), text.stdout
    assert f"({event_id} -> webhook); `hokusai-ml-platform events relay --event-id {event_id}` sends it now" in (
        text.stdout
    )
    due = json.loads(data.stdout)["next_due"]
    assert (due["event_id"], due["sink"]) == (event_id, "webhook") and 580 < due["in_seconds"] <= 600
    assert receiver.requests == []
    now = run_relay_once(database_url, receiver.url, tmp_path, "--event-id", event_id)
    assert now.returncode == 0, now.stdout
    assert posted_ids(receiver) == Counter([event_id])


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("option", "value"),
    [("--interval", "nan"), ("--interval", "NaN"), ("--max-seconds", "nan"), ("--max-seconds", "inf")],
)
def test_a_float_option_that_is_not_a_finite_number_is_refused(httpserver, tmp_path, option, value):
    """A NaN passed every range check: --interval nan polled in a busy loop, --max-seconds nan never ended."""
    receiver = Receiver(httpserver)
    relay = start_follow_relay(
        f"sqlite:///{tmp_path / 'site.db'}", receiver.url, tmp_path, interval=1, args=(option, value)
    )
    try:
        out, err = relay.communicate(timeout=30)
    finally:
        if relay.poll() is None:
            relay.kill()
            relay.communicate()
    assert relay.returncode == 2, err
    assert err.startswith(f"error: Invalid value for '{option}': {value} is not a finite number")
    assert len(err.strip().splitlines()) == 1 and out == ""
    assert receiver.requests == []


@pytest.mark.e2e
def test_max_seconds_needs_follow(httpserver, tmp_path):
    receiver = Receiver(httpserver)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HOKUSAI_"))}
    env.update(HOKUSAI_DATABASE_URL=f"sqlite:///{tmp_path / 'site.db'}", HOKUSAI_HOME=str(tmp_path / ".hokusai"))
    done = run_captured(cli_command("events", "relay", "--max-seconds", "5"), env=env, cwd=tmp_path, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: --max-seconds bounds a relay that follows (--follow)")
    assert len(done.stderr.strip().splitlines()) == 1 and done.stdout == ""
    assert receiver.requests == []


@pytest.mark.e2e
@pytest.mark.slow
def test_three_following_relays_deliver_a_stream_exactly_once(database_url, fresh_db, add_events, httpserver, tmp_path):
    """Three `events relay --follow` processes (as on three machines) share one database while 40
    registrations are committed, one token each, and some tokens reset and registered again at once:
    every event id reaches the receiver exactly once, except a reset registration's, which reaches it
    once before the reset or never (its delivery is then cancelled), and no lease is left."""

    receiver = Receiver(httpserver, delay=0.03)
    relays = [start_follow_relay(database_url, receiver.url, tmp_path, interval=2) for _ in range(3)]
    committed: list[str] = []
    pairs: list[tuple[str, str]] = []
    try:
        for n in range(30):
            committed += add_events(1)
            if n % 10 == 9:
                with fresh_db.unit_of_work() as uow:
                    insert_token(uow, f"TWICE{n}")
                    first = commit_registration(uow, f"TWICE{n}")
                    uow.commit()
                _, second = reset_and_register_again(fresh_db, f"TWICE{n}")
                pairs.append((first, second))
                committed.append(second)
            time.sleep(0.05)
        wait_until(lambda: set(committed) <= set(posted_ids(receiver)), timeout=120, what="every delivery")
        time.sleep(1.0)  # room for a duplicate to show up
    finally:
        outputs = [stop(relay) for relay in relays]
    assert [relay.returncode for relay in relays] == [0, 0, 0], [err for _, err in outputs]
    posted = posted_ids(receiver)
    withdrawn = [first for first, _ in pairs]
    assert Counter({k: v for k, v in posted.items() if k not in withdrawn}) == Counter(committed)  # each once
    state = rows(fresh_db)
    order = [json.loads(body)["id"] for _, body in receiver.requests]
    for first, second in pairs:
        if posted[first]:  # sent before the reset: once, and before the new registration's
            assert posted[first] == 1 and order.index(first) < order.index(second)
            assert state[(first, "webhook")]["status"] == "delivered"
        else:
            assert state[(first, "webhook")]["status"] == "cancelled"
    assert all(
        r["status"] == "delivered" and r["attempts"] == 1
        for k, r in state.items()
        if k[1] == "webhook" and k[0] not in withdrawn
    )
    assert all(r["lease_owner"] is None and r["sending_since"] is None for r in state.values())
    assert not any("Traceback" in err for _, err in outputs)
