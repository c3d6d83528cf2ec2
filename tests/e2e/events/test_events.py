"""token_ready_for_deploy end to end: Pub/Sub emulator, a signed-webhook receiver, the database
watcher's row and NOTIFY, the outbox under faults, and `events relay`."""

from __future__ import annotations

import json
import select
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg2
import pytest
import sqlalchemy as sa

from hokusai_action.db import outbox
from hokusai_action.db.schema import event_deliveries, events
from hokusai_action.db.store import as_utc, utcnow
from hokusai_action.domain.event import CloudEventRecord
from tests.event_sinks import SECRET, Receiver, deliveries, register, sink_env
from tests.helpers import CLI_PYTHON, register_args

pytestmark = [pytest.mark.e2e]


def while_down(env: dict[str, str]) -> dict[str, str]:
    """``env`` for a run made while the emulator is stopped: every Pub/Sub call there fails until its
    timeout (the preflight, then the publish), so a shorter one gives the same outcome sooner."""
    return {**env, "HOKUSAI_PUBSUB_TIMEOUT": "1"}


def test_all_three_sinks_receive_one_event_with_one_id(
    run_cli, make_token, make_model, pubsub_emulator, pubsub_topic, httpserver, database
):
    receiver = Receiver(httpserver)
    token = make_token()
    env = sink_env(pubsub_emulator, pubsub_topic.topic, receiver.url, "pubsub,webhook,database")

    result = register(run_cli, token, make_model(), env)

    assert result.code == 0, result.stderr
    event_id = result.json["event_id"]
    assert result.json["events_delivered"] == {"pubsub": True, "webhook": True, "database": True}
    # Pub/Sub: binary mode, ordering key = token
    messages = pubsub_emulator.pull(pubsub_topic.subscription, max_messages=2, timeout=5)
    assert len(messages) == 1
    message = messages[0]
    assert message.attributes["ce-id"] == event_id
    assert message.attributes["ce-type"] == "token_ready_for_deploy"
    assert message.attributes["event_type"] == "token_ready_for_deploy"
    assert message.attributes["ce-subject"] == token
    assert message.ordering_key == token
    data = json.loads(message.data)
    assert data["model_uri"] == result.json["model_uri"]
    assert data["mlflow_run_id"] == result.json["mlflow_run_id"]
    # webhook: structured mode, signed, one delivery
    received = receiver.verified_events()
    assert len(received) == 1
    assert received[0]["webhook-id"] == event_id
    assert received[0]["event"]["id"] == event_id
    assert received[0]["event"]["data"] == data
    # database: the watcher's row
    with database.unit_of_work() as uow:
        row = uow.execute(sa.select(events).where(events.c.event_id == event_id)).one()
    assert row.processed is False
    assert row.payload["data"] == data
    assert SECRET not in result.output


def test_pubsub_down_exits_5_then_relay_delivers_exactly_that_event(
    run_cli, make_token, make_model, pubsub_emulator, pubsub_topic, database, snapshot
):
    token = make_token()
    env = sink_env(pubsub_emulator, pubsub_topic.topic, None, "pubsub,database")
    with pubsub_emulator.down():
        result = register(run_cli, token, make_model(), while_down(env))
        assert result.code == 5, result.stderr
        assert "is not delivered yet to: pubsub" in result.stderr
        assert "events relay" in result.stderr
        event_id = result.json["event_id"]
        assert result.json["status"] == "registered"
        state = deliveries(database, event_id)
        assert state["pubsub"]["status"] == "pending"
        assert state["pubsub"]["attempts"] == 1
        assert state["pubsub"]["last_error"]
        assert state["database"]["status"] == "delivered"
        assert snapshot(token).token["model_status"] == "registered"

    relay = run_cli("events", "relay", "--output", "json", env=env)
    assert relay.code == 0, relay.stderr
    assert relay.json["delivered"] == [{"event_id": event_id, "sink": "pubsub"}]
    messages = pubsub_emulator.pull(pubsub_topic.subscription, max_messages=2, timeout=5)
    assert [m.attributes["ce-id"] for m in messages] == [event_id]

    second = run_cli("events", "relay", "--output", "json", env=env)
    assert second.code == 0
    assert second.json["delivered"] == []
    assert pubsub_emulator.pull(pubsub_topic.subscription, max_messages=1, timeout=2) == []
    assert deliveries(database, event_id)["pubsub"]["status"] == "delivered"


def test_rerun_delivers_a_pending_event_and_emits_no_second_one(
    run_cli, make_token, make_model, pubsub_emulator, pubsub_topic, snapshot
):
    token = make_token()
    model = make_model()
    env = sink_env(pubsub_emulator, pubsub_topic.topic, None, "pubsub,database")
    with pubsub_emulator.down():
        assert register(run_cli, token, model, while_down(env)).code == 5

    again = register(run_cli, token, model, env)

    assert again.code == 0, again.stderr
    assert again.json["events_delivered"] == {"pubsub": True, "database": True}
    messages = pubsub_emulator.pull(pubsub_topic.subscription, max_messages=2, timeout=5)
    assert [m.attributes["ce-id"] for m in messages] == [again.json["event_id"]]
    assert snapshot(token).events == 1


def test_webhook_410_is_a_dead_letter_until_retried_then_delivered_once(
    run_cli, make_token, make_model, httpserver, database
):
    refusing = Receiver(httpserver, statuses=[410])
    token = make_token()
    env = sink_env(None, None, refusing.url, "webhook,database")

    result = register(run_cli, token, make_model(), env)

    assert result.code == 5, result.stderr
    event_id = result.json["event_id"]
    assert len(refusing.requests) == 1  # a permanent failure is not retried
    assert "dead-lettered" in result.stderr
    assert f"hokusai-ml-platform events retry {event_id}" in result.stderr
    state = deliveries(database, event_id)["webhook"]
    assert state["status"] == "failed"
    assert "410" in state["last_error"]
    assert SECRET not in state["last_error"]
    shown = run_cli("token", "show", token, "--output", "json", env=env)
    assert shown.code == 0, shown.stderr
    (webhook_row,) = [d for d in shown.json["event_deliveries"] if d["sink"] == "webhook"]
    assert webhook_row["status"] == "failed" and "410" in webhook_row["last_error"]

    # the relay skips the dead letter (no second POST) and still exits 5, naming it and the fix
    relay = run_cli("events", "relay", "--event-id", event_id, env=env)
    assert relay.code == 5, relay.output
    assert f"dead letter {event_id} -> webhook" in relay.stdout
    assert "HTTP 410" in relay.stdout
    assert f"hokusai-ml-platform events retry {event_id}" in relay.stdout
    assert len(refusing.requests) == 1

    unknown = run_cli("events", "retry", "00000000-0000-4000-8000-000000000000", env=env)
    assert unknown.code == 2
    assert "does not exist" in unknown.stderr

    # the receiver is fixed; the operator re-queues the dead letter and the relay delivers it once
    httpserver.clear()
    accepting = Receiver(httpserver)
    retry = run_cli("events", "retry", event_id, env=env)
    assert retry.code == 0, retry.output
    assert f"{event_id} -> webhook" in retry.stdout
    again = run_cli("events", "relay", "--event-id", event_id, "--output", "json", env=env)
    assert again.code == 0, again.output
    assert again.json["delivered"] == [{"event_id": event_id, "sink": "webhook"}]
    received = accepting.verified_events()
    assert [r["webhook-id"] for r in received] == [event_id]
    assert received[0]["event"]["id"] == event_id
    assert deliveries(database, event_id)["webhook"]["status"] == "delivered"


def test_undelivered_sinks_are_named_for_what_they_are_in_the_text_output(run_cli, make_token, make_model, httpserver):
    """A dead letter is not "PENDING" in the registration's summary, and `token show` counts the
    delivery passes in words that cannot be read against the webhook's own "after 5/5 attempts"."""
    down = Receiver(httpserver, statuses=[503] * 5 + [410])
    env = {**sink_env(None, None, down.url, "webhook,database"), "HOKUSAI_WEBHOOK_TIMEOUT": "3"}
    waiting, refused = make_token(), make_token()

    pending = run_cli(*register_args(waiting, make_model()), env=env)
    dead = run_cli(*register_args(refused, make_model()), env=env)

    assert pending.code == 5 and dead.code == 5, (pending.output, dead.output)
    assert "(database: delivered, webhook: PENDING)" in pending.stdout
    assert "(database: delivered, webhook: FAILED (dead letter))" in dead.stdout
    shown = run_cli("token", "show", waiting, env=env)
    assert shown.code == 0, shown.output
    (line,) = [line for line in shown.stdout.splitlines() if line.startswith("delivery") and "webhook" in line]
    assert "webhook: pending after 1 delivery pass(es); next pass from 20" in line, line
    assert "after 5/5 attempts" in line and "attempt(s)" not in line
    shown = run_cli("token", "show", refused, env=env)
    (line,) = [line for line in shown.stdout.splitlines() if line.startswith("delivery") and "webhook" in line]
    assert "webhook: failed (a dead letter) after 1 delivery pass(es) (last error: " in line, line


def test_webhook_503_twice_then_200_is_three_posts_with_one_id(run_cli, make_token, make_model, httpserver):
    receiver = Receiver(httpserver, statuses=[503, 503])
    token = make_token()
    result = register(run_cli, token, make_model(), sink_env(None, None, receiver.url, "webhook,database"))
    assert result.code == 0, result.stderr
    ids = {event["webhook-id"] for event in receiver.verified_events()}
    assert len(receiver.requests) == 3
    assert ids == {result.json["event_id"]}


def test_dry_run_builds_the_event_and_sends_nothing(
    run_cli, make_token, make_model, pubsub_emulator, pubsub_topic, httpserver, snapshot
):
    receiver = Receiver(httpserver)
    token = make_token()
    before = snapshot(token)
    env = sink_env(pubsub_emulator, pubsub_topic.topic, receiver.url, "pubsub,webhook,database")
    result = register(run_cli, token, make_model(), env, "--dry-run")
    assert result.code == 0, result.stderr
    assert result.json["event"]["type"] == "token_ready_for_deploy"
    assert pubsub_emulator.pull(pubsub_topic.subscription, max_messages=1, timeout=2) == []
    assert receiver.requests == []
    assert snapshot(token) == before


def test_notify_fires_on_commit_and_not_on_rollback(database, services, make_token):
    token = make_token()
    listener = psycopg2.connect(
        sa.engine.make_url(services.database_url)
        .render_as_string(hide_password=False)
        .replace("postgresql+psycopg2", "postgresql")
    )
    listener.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
    listener.cursor().execute("LISTEN token_ready_for_deploy")

    def event(n: int) -> CloudEventRecord:
        return CloudEventRecord(
            id=f"00000000-0000-4000-8000-00000000000{n}",
            source="test",
            time="2026-01-01T00:00:00Z",
            subject=token,
            data={"n": n},
        )

    def notifications(wait: float) -> list[str]:
        if select.select([listener], [], [], wait) == ([], [], []):
            return []
        listener.poll()
        found = [n.payload for n in listener.notifies]
        listener.notifies.clear()
        return found

    try:
        with database.unit_of_work() as uow:
            outbox.add_event(uow, event(1), token_id=token, sinks=["database"])
            assert notifications(0.5) == []  # nothing before commit
            uow.commit()
        assert notifications(5) == [event(1).id]

        with database.unit_of_work() as uow:
            outbox.add_event(uow, event(2), token_id=token, sinks=["database"])
            # leaving without commit() rolls back
        assert notifications(1) == []
        with database.unit_of_work() as uow:
            assert outbox.get_event(uow, event(2).id) is None
    finally:
        listener.close()


def test_forced_rollback_after_upload_leaves_no_event_and_publishes_nothing(
    cli_env, make_token, make_model, pubsub_emulator, pubsub_topic, database, snapshot, tmp_path, monkeypatch
):
    """A fault a real database will not show on demand: the final transaction fails after the
    MLflow upload. The registration must leave no event, publish nothing, and free the token."""
    from hokusai_action.commands.register import run_register
    from hokusai_action.errors import ServiceUnavailable
    from hokusai_action.settings.loader import load_settings

    token = make_token()
    env = {**cli_env, **sink_env(pubsub_emulator, pubsub_topic.topic, None, "pubsub,database")}
    settings = load_settings(
        {"token_id": token, "model_path": str(make_model()), "metric": "auroc", "baseline": "0.82"},
        environ=env,
        cwd=tmp_path,
    )
    real_add_event = outbox.add_event

    def add_event_then_fail(uow, event, **kwargs):
        real_add_event(uow, event, **kwargs)  # the row is written inside the transaction...
        raise ServiceUnavailable("database connection lost before commit")  # ...which never commits

    monkeypatch.setattr(outbox, "add_event", add_event_then_fail)
    with pytest.raises(ServiceUnavailable):
        run_register(settings)

    after = snapshot(token)
    assert after.events == 0
    assert after.deliveries == ()
    assert after.token["model_status"] == "draft"
    assert pubsub_emulator.pull(pubsub_topic.subscription, max_messages=1, timeout=2) == []
    # the version uploaded before the fault is reused by the re-run, not duplicated
    monkeypatch.setattr(outbox, "add_event", real_add_event)
    settings_again = load_settings(
        {"token_id": token, "model_path": settings.model_path, "metric": "auroc", "baseline": "0.82"},
        environ=env,
        cwd=tmp_path,
    )
    result, code = run_register(settings_again)
    assert code == 0
    assert snapshot(token).versions == ("1",)
    assert [m.attributes["ce-id"] for m in pubsub_emulator.pull(pubsub_topic.subscription, 2, timeout=5)] == [
        result.event_id
    ]


def test_two_relays_at_once_deliver_each_event_once(
    run_cli, cli_env, make_token, make_model, httpserver, database, tmp_path
):
    # three registered tokens whose webhook delivery failed (the receiver said 500 each time)
    failing = Receiver(httpserver, statuses=[500] * 100)
    env = {**sink_env(None, None, failing.url, "webhook,database"), "HOKUSAI_WEBHOOK_TIMEOUT": "1"}
    # three independent registrations, run side by side: each spends its seconds in the webhook's retries
    jobs = [(make_token(), make_model()) for _ in range(3)]
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        results = list(pool.map(lambda job: register(run_cli, *job, env), jobs))
    event_ids = []
    for result in results:
        assert result.code == 5, result.stderr
        event_ids.append(result.json["event_id"])
    httpserver.clear()
    slow = Receiver(httpserver, delay=0.5)  # slow enough that the two relays overlap
    # a relay over all events honours each delivery's backoff: wait until the last failure's is over, so
    # both relays see all three (a fast registration can end inside its own first backoff)
    with database.unit_of_work() as uow:
        latest = uow.execute(
            sa.select(sa.func.max(event_deliveries.c.next_attempt_at)).where(event_deliveries.c.event_id.in_(event_ids))
        ).scalar()
    if latest is not None:
        time.sleep(max(0.0, (as_utc(latest) - utcnow()).total_seconds()) + 0.2)

    relay_cmd = [CLI_PYTHON, "-m", "hokusai_action", "events", "relay", "--output", "json"]
    relay_env = {**cli_env, **env, "HOKUSAI_WEBHOOK_TIMEOUT": "10"}  # slower than the receiver: no retries
    relays = [
        subprocess.Popen(
            relay_cmd, env=relay_env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [relay.communicate(timeout=120) for relay in relays]

    delivered = [item["event_id"] for out, _ in outputs for item in json.loads(out)["delivered"]]
    ours = [event_id for event_id in delivered if event_id in event_ids]
    assert sorted(ours) == sorted(event_ids)  # each exactly once across both relays
    posted = [json.loads(body)["id"] for _, body in slow.requests]
    assert sorted(p for p in posted if p in event_ids) == sorted(event_ids)


def test_dry_run_on_a_registered_token_delivers_nothing(run_cli, make_token, make_model, httpserver, database):
    token = make_token()
    model = make_model()
    refusing = Receiver(httpserver, statuses=[400])
    first = register(run_cli, token, model, sink_env(None, None, refusing.url, "webhook,database"))
    assert first.code == 5
    httpserver.clear()
    accepting = Receiver(httpserver)
    dry = register(run_cli, token, model, sink_env(None, None, accepting.url, "webhook,database"), "--dry-run")
    assert dry.code == 0, dry.stderr
    assert dry.json["dry_run"] is True
    assert dry.json["events_delivered"]["webhook"] is False
    assert accepting.requests == []
    assert deliveries(database, first.json["event_id"])["webhook"]["status"] == "failed"  # a dead letter


# ------------------------------------------------------------------ sink preflight and Pub/Sub dead letters


def test_a_missing_pubsub_topic_is_refused_before_anything_changes(
    run_cli, make_token, make_model, pubsub_emulator, snapshot
):
    token = make_token()
    before = snapshot(token)
    missing = pubsub_emulator.topic_path("never-created")
    result = register(run_cli, token, make_model(), sink_env(pubsub_emulator, missing, None, "pubsub,database"))
    assert result.code == 2, result.output
    assert f"Pub/Sub topic {missing} does not exist" in result.stderr
    assert "Traceback" not in result.stderr
    assert snapshot(token) == before  # no claim, no version, no event


def test_an_unparsable_webhook_url_is_refused_before_anything_changes(run_cli, make_token, make_model, snapshot):
    token = make_token()
    before = snapshot(token)
    env = {**sink_env(None, None, "https://hooks.example.com:99999/hook", "webhook,database")}
    result = register(run_cli, token, make_model(), env)
    assert result.code == 2, result.output
    assert "webhook URL" in result.stderr
    assert snapshot(token) == before


@pytest.mark.slow  # two emulator restarts and four CLI runs
def test_pubsub_down_at_preflight_goes_on_then_a_deleted_topic_is_a_dead_letter_until_retried(
    run_cli, make_token, make_model, pubsub_emulator, pubsub_topic, database
):
    token = make_token()
    env = sink_env(pubsub_emulator, pubsub_topic.topic, None, "pubsub,database")
    with pubsub_emulator.down():  # unreachable is not a settings error: warn, register, exit 5
        result = register(run_cli, token, make_model(), while_down(env))
    assert result.code == 5, result.stderr
    assert "could not be checked" in result.stderr
    event_id = result.json["event_id"]
    assert result.json["status"] == "registered"
    assert deliveries(database, event_id)["pubsub"]["status"] == "pending"

    pubsub_emulator.delete_topic(pubsub_topic.topic)
    relay = run_cli("events", "relay", "--event-id", event_id, "--output", "json", env=env)
    assert relay.code == 5, relay.output
    (dead,) = relay.json["failed"]
    assert (dead["event_id"], dead["sink"]) == (event_id, "pubsub")
    assert "does not exist" in dead["error"]
    assert deliveries(database, event_id)["pubsub"]["status"] == "failed"

    topic = pubsub_emulator.make_topic(pubsub_topic.topic.rsplit("/", 1)[1])
    subscription = pubsub_emulator.make_subscription(topic)
    assert run_cli("events", "retry", "--all-failed", env=env).code == 0
    again = run_cli("events", "relay", "--event-id", event_id, "--output", "json", env=env)
    assert again.code == 0, again.output
    messages = pubsub_emulator.pull(subscription, max_messages=2, timeout=5)
    assert [m.attributes["ce-id"] for m in messages] == [event_id]
