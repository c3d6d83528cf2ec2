"""A token reset to draft (`token reset`, or the site's reset) is registered again as a new registration."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time

import pytest
import sqlalchemy as sa

from hokusai_action.db.schema import event_deliveries, events, tokens
from hokusai_action.domain.event import event_id_for
from tests.event_sinks import Receiver, deliveries, register, sink_env
from tests.faults import run_to_failpoint
from tests.helpers import CLI_PYTHON, assert_one_clear_line, register_args, set_token

pytestmark = [pytest.mark.e2e]


def event_ids(database, token: str) -> list[str]:
    with database.unit_of_work() as uow:
        rows = uow.execute(sa.select(events.c.event_id).where(events.c.token_id == token)).all()
    return sorted(str(row.event_id) for row in rows)


def site_reset(database, token: str) -> None:
    """The site's own reset: the documented columns back to draft, nothing else."""
    set_token(database, token, model_status="draft", artifact_digest=None, mlflow_run_id=None, model_version=None)


def token_row(database, token: str):
    with database.unit_of_work() as uow:
        return uow.execute(sa.select(tokens).where(tokens.c.token_id == token)).one()


def test_reset_then_the_same_bytes_reuse_the_version_with_a_new_event(
    run_cli, make_token, make_model, database, mlflow_client, snapshot
):
    token = make_token()
    model = make_model()
    first = run_cli(*register_args(token, model, "--output", "json"))
    assert first.code == 0, first.stderr
    assert first.json["event_id"] == event_id_for(token, first.json["artifact_digest"])  # ids from before stay

    reset = run_cli("token", "reset", token, "--output", "json")
    assert reset.code == 0, reset.stderr
    assert reset.json["status"] == "draft"
    assert reset.json["previous_status"] == "registered"
    assert reset.json["cleared"]["model_version"] == "1"
    assert reset.json["cleared"]["event_id"] == first.json["event_id"]
    assert reset.json["events_kept"] == 1
    row = token_row(database, token)
    assert row.model_status == "draft"
    for column in ("mlflow_run_id", "metric_value", "baseline_value", "model_version", "artifact_digest", "event_id"):
        assert getattr(row, column) is None, column

    dry = run_cli(*register_args(token, model, "--dry-run", "--output", "json"))
    assert dry.code == 0, dry.stderr
    again = run_cli(*register_args(token, model, "--output", "json"))

    assert again.code == 0, again.stderr
    assert again.json["already_registered"] is False
    assert again.json["model_version"] == "1"  # the same bytes: MLflow's version is reused
    assert again.json["mlflow_run_id"] == first.json["mlflow_run_id"]
    assert again.json["event_id"] != first.json["event_id"]  # a new registration: the deploy side hears again
    assert dry.json["event_id"] == again.json["event_id"]  # the dry run reported the id a real run uses
    assert [v.version for v in mlflow_client.search_model_versions(f"name = 'hokusai-{token}'")] == ["1"]
    assert event_ids(database, token) == sorted([first.json["event_id"], again.json["event_id"]])
    assert token_row(database, token).event_id == again.json["event_id"]

    before = snapshot(token)
    rerun = run_cli(*register_args(token, model, "--output", "json"))  # a re-run keeps the new id
    assert rerun.code == 0, rerun.stderr
    assert rerun.json["already_registered"] is True
    assert rerun.json["event_id"] == again.json["event_id"]
    assert snapshot(token) == before

    shown = run_cli("token", "show", token, "--output", "json")
    assert shown.code == 0, shown.stderr
    assert shown.json["event_id"] == again.json["event_id"]
    assert [d["event_id"] for d in shown.json["event_deliveries"]] == [again.json["event_id"]]


def test_reset_then_the_same_bytes_upload_nothing(run_cli, make_token, make_model, mlflow_client):
    """The token has had a registration (its events stay): its bytes are hashed first and the version they
    already are is found before anything is sent (DESIGN.md: a re-run uploads nothing)."""
    from tests.mlflow_store import logged_models

    token = make_token()
    model = make_model()
    first = run_cli(*register_args(token, model, "--output", "json"))
    assert first.code == 0, first.stderr
    assert first.json["upload"]["bytes"] > 0
    uploads = logged_models(mlflow_client, token)
    assert run_cli("token", "reset", token).code == 0

    again = run_cli(*register_args(token, model, "--output", "json"))

    assert again.code == 0, again.stderr
    assert again.json["model_version"] == "1"
    assert again.json.get("upload", {"bytes": 0})["bytes"] == 0  # nothing sent
    assert logged_models(mlflow_client, token) == uploads  # no second copy, not even one marked FAILED


def test_reset_then_other_bytes_make_a_new_version(run_cli, make_token, make_model, database, mlflow_client):
    token = make_token()
    first = run_cli(*register_args(token, make_model(), "--output", "json"))
    assert first.code == 0, first.stderr
    assert run_cli("token", "reset", token).code == 0

    other = run_cli(*register_args(token, make_model(), "--output", "json"))

    assert other.code == 0, other.stderr
    assert other.json["model_version"] == "2"
    assert other.json["event_id"] != first.json["event_id"]
    assert sorted(v.version for v in mlflow_client.search_model_versions(f"name = 'hokusai-{token}'")) == ["1", "2"]
    assert len(event_ids(database, token)) == 2


def test_reset_a_site_reset_token_registered_before_event_ids_were_stored(run_cli, make_token, make_model, database):
    """Rows registered before revision 0002 have no event_id: re-runs find their event by the old formula."""
    token = make_token()
    model = make_model()
    first = run_cli(*register_args(token, model, "--output", "json"))
    assert first.code == 0, first.stderr
    with database.unit_of_work() as uow:
        uow.execute(tokens.update().where(tokens.c.token_id == token).values(event_id=None))
        uow.commit()

    rerun = run_cli(*register_args(token, model, "--output", "json"))
    assert rerun.code == 0, rerun.stderr
    assert rerun.json["event_id"] == first.json["event_id"]

    site_reset(database, token)
    again = run_cli(*register_args(token, model, "--output", "json"))
    assert again.code == 0, again.stderr
    assert again.json["event_id"] not in (None, first.json["event_id"])
    assert len(event_ids(database, token)) == 2


def test_reset_text_output_says_what_it_cleared(run_cli, make_token, make_model):
    token = make_token()
    assert run_cli(*register_args(token, make_model())).code == 0

    reset = run_cli("token", "reset", token)

    assert reset.code == 0, reset.stderr
    assert f"Token {token} reset from registered to draft" in reset.stdout
    assert "model_version" in reset.stdout and "artifact_digest" in reset.stdout
    assert "1 event(s) kept" in reset.stdout


def test_reset_a_missing_token_exit_3(run_cli):
    result = run_cli("token", "reset", "NOSUCHTOKEN")
    assert result.code == 3
    assert "Token NOSUCHTOKEN does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_reset_a_token_being_registered_exit_3(run_cli, make_token, database, snapshot):
    token = make_token()
    set_token(
        database,
        token,
        model_status="registering",
        claim_owner="elsewhere:1:abcd",
        claim_expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5),
    )
    before = snapshot(token)

    result = run_cli("token", "reset", token)

    assert result.code == 3
    assert f"Token {token} is being registered by another run (elsewhere:1:abcd" in result.stderr
    assert snapshot(token) == before


def test_reset_an_expired_claim_and_a_draft_token(run_cli, make_token, database):
    token = make_token()
    assert run_cli("token", "reset", token, "--output", "json").json["cleared"] == {}
    set_token(
        database,
        token,
        model_status="registering",
        claim_owner="elsewhere:1:abcd",
        claim_expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5),
    )

    result = run_cli("token", "reset", token, "--output", "json")

    assert result.code == 0, result.stderr
    assert result.json["cleared"]["claim_owner"] == "elsewhere:1:abcd"
    assert token_row(database, token).model_status == "draft"


# ------------------------------------------------------------------ a reset withdraws the registration


def cli(*args: str) -> list[str]:
    return [CLI_PYTHON, "-m", "hokusai_action", *args]


def webhook_env(url: str, **extra: str) -> dict[str, str]:
    return {**sink_env(None, None, url, "webhook,database"), **extra}


def posted(receiver: Receiver) -> list[str]:
    return [json.loads(body)["id"] for _, body in receiver.requests]


def register_while_the_webhook_is_down(run_cli, httpserver, token: str, model, status: int = 503) -> str:
    """A registration whose webhook delivery did not go through (exit 5); the receiver is then cleared."""
    down = Receiver(httpserver, statuses=[status] * 5)
    result = register(run_cli, token, model, webhook_env(down.url))
    assert result.code == 5, result.output
    httpserver.clear()
    return result.json["event_id"]


def test_reset_refuses_a_claim_taken_between_its_read_and_its_write_on_sqlite(cli_env, tmp_path):
    from hokusai_action.db.store import Database, get_token, insert_token, try_claim

    url = f"sqlite:///{tmp_path / 'site.db'}"
    database = Database(url)
    database.upgrade()
    with database.unit_of_work() as uow:
        insert_token(uow, "RACED")
        uow.commit()

    def claim_meanwhile() -> None:  # a registration claims the token while the reset sleeps after its read
        with database.unit_of_work() as uow:
            assert try_claim(uow, "RACED", owner="elsewhere:1:abcd", ttl_seconds=300)
            uow.commit()

    reset = run_to_failpoint(
        cli("token", "reset", "RACED"),
        env={**cli_env, "HOKUSAI_DATABASE_URL": url},
        cwd=tmp_path,
        failpoint="reset_after_read:sleep:3",
        at_failpoint=claim_meanwhile,
    )

    assert reset.reached, reset.stderr
    assert reset.code == 3, reset.stderr
    assert "Token RACED is being registered by another run (elsewhere:1:abcd" in reset.stderr
    with database.unit_of_work() as uow:
        token = get_token(uow, "RACED")
    assert (token.model_status, token.claim_owner) == ("registering", "elsewhere:1:abcd")  # the claim survived
    database.dispose()


def test_an_event_id_is_never_reused_after_the_site_prunes_events(run_cli, make_token, make_model, database):
    token = make_token()
    model = make_model()
    seen = []
    for _ in range(3):
        result = run_cli(*register_args(token, model, "--output", "json"))
        assert result.code == 0, result.stderr
        assert result.json["event_id"] not in seen  # a consumer deduping on the id hears every registration
        seen.append(result.json["event_id"])
        with database.unit_of_work() as uow:  # the site prunes the token's events (deliveries first)
            ids = sa.select(events.c.event_id).where(events.c.token_id == token)
            uow.execute(event_deliveries.delete().where(event_deliveries.c.event_id.in_(ids)))
            uow.execute(events.delete().where(events.c.token_id == token))
            uow.commit()
        assert run_cli("token", "reset", token).code == 0
    assert seen[0] == event_id_for(token, result.json["artifact_digest"])  # the first id is as it always was


def test_a_reset_cancels_the_undelivered_event_and_no_relay_sends_it(
    run_cli, make_token, make_model, httpserver, database, snapshot
):
    token = make_token()
    event_id = register_while_the_webhook_is_down(run_cli, httpserver, token, make_model())
    up = Receiver(httpserver)
    env = webhook_env(up.url)

    reset = run_cli("token", "reset", token, "--output", "json", env=env)

    assert reset.code == 0, reset.output
    (cancelled,) = reset.json["cancelled"]
    assert (cancelled["event_id"], cancelled["sink"], cancelled["previous_status"]) == (event_id, "webhook", "pending")
    row = deliveries(database, event_id)["webhook"]
    assert row["status"] == "cancelled"
    assert f"token {token} was reset to draft" in row["cancel_reason"]
    assert row["cancelled_at"] is not None
    again = run_cli("token", "reset", token, env=env)  # a second reset has nothing left to cancel
    assert again.code == 0, again.output
    assert "cancelled" not in again.stdout

    relay = run_cli("events", "relay", "--event-id", event_id, "--output", "json", env=env)
    everything = run_cli("events", "relay", env=env)  # a relay over every pending event: not this one either

    assert relay.code == 0, relay.output
    assert relay.json["delivered"] == [] and relay.json["pending"] == []
    assert everything.code in (0, 5), everything.output
    assert event_id not in posted(up)
    assert deliveries(database, event_id)["webhook"]["status"] == "cancelled"

    before = snapshot(token)
    retry = run_cli("events", "retry", event_id, env=env)
    assert_one_clear_line(retry, 3, f"Event {event_id} was withdrawn", "cancelled")
    assert snapshot(token) == before
    assert deliveries(database, event_id)["webhook"]["status"] == "cancelled"


def test_a_reset_cancels_a_dead_letter_so_events_retry_cannot_revive_it(
    run_cli, make_token, make_model, httpserver, database, snapshot
):
    token = make_token()
    event_id = register_while_the_webhook_is_down(run_cli, httpserver, token, make_model(), status=410)
    assert deliveries(database, event_id)["webhook"]["status"] == "failed"
    up = Receiver(httpserver)
    env = webhook_env(up.url)

    reset = run_cli("token", "reset", token, env=env)

    assert reset.code == 0, reset.output
    assert f"cancelled   {event_id} -> webhook (was failed" in reset.stdout
    before = snapshot(token)
    assert_one_clear_line(run_cli("events", "retry", event_id, env=env), 3, f"Event {event_id} was withdrawn")
    assert run_cli("events", "retry", "--all-failed", env=env).code == 0  # a cancelled row is no dead letter
    assert snapshot(token) == before
    assert run_cli("events", "relay", "--event-id", event_id, env=env).code == 0
    assert posted(up) == []
    assert deliveries(database, event_id)["webhook"]["status"] == "cancelled"


def test_after_a_reset_only_the_new_registration_is_delivered(
    run_cli, make_token, make_model, httpserver, database, mlflow_client
):
    token = make_token()
    old = register_while_the_webhook_is_down(run_cli, httpserver, token, make_model())
    up = Receiver(httpserver)
    env = webhook_env(up.url)
    assert run_cli("token", "reset", token, env=env).code == 0

    new = register(run_cli, token, make_model(), env)
    assert new.code == 0, new.output
    assert new.json["model_version"] == "2"
    assert run_cli("events", "relay", "--event-id", old, env=env).code == 0

    assert posted(up) == [new.json["event_id"]]  # v2's event alone: v1 was withdrawn before it was ever sent
    assert deliveries(database, old)["webhook"]["status"] == "cancelled"


def test_a_relay_cancels_an_event_the_token_no_longer_holds_after_the_sites_own_reset(
    run_cli, make_token, make_model, httpserver, database
):
    """The site's reset knows nothing of deliveries: the relay sees the token is draft and cancels."""
    token = make_token()
    event_id = register_while_the_webhook_is_down(run_cli, httpserver, token, make_model())
    site_reset(database, token)
    up = Receiver(httpserver)

    relay = run_cli("events", "relay", "--event-id", event_id, "--output", "json", env=webhook_env(up.url))

    assert relay.code == 0, relay.output
    assert posted(up) == []
    (cancelled,) = relay.json["cancelled"]
    assert (cancelled["event_id"], cancelled["sink"]) == (event_id, "webhook")
    assert f"token {token} no longer holds this registration" in cancelled["reason"]
    assert deliveries(database, event_id)["webhook"]["status"] == "cancelled"


def test_a_reset_while_a_relay_holds_the_lease_wins_and_the_relay_sends_nothing(
    run_cli, cli_env, make_token, make_model, httpserver, database, tmp_path
):
    token = make_token()
    event_id = register_while_the_webhook_is_down(run_cli, httpserver, token, make_model())
    up = Receiver(httpserver)
    env = webhook_env(up.url)
    resets = []

    relay = run_to_failpoint(
        cli("events", "relay", "--event-id", event_id, "--output", "json"),
        env={**cli_env, **env},
        cwd=tmp_path,
        failpoint="before_send:sleep:6",  # the relay holds the lease; the reset runs meanwhile
        at_failpoint=lambda: resets.append(run_cli("token", "reset", token, "--output", "json", env=env)),
    )

    assert relay.reached, relay.stderr
    (reset,) = resets
    assert reset.code == 0, reset.output
    assert [c["event_id"] for c in reset.json["cancelled"]] == [event_id]
    assert relay.code == 0, relay.stderr
    assert relay.json["delivered"] == []
    assert posted(up) == []
    assert deliveries(database, event_id)["webhook"]["status"] == "cancelled"


def test_a_reset_while_the_event_is_on_its_way_is_refused_until_it_arrives(
    run_cli, cli_env, make_token, make_model, httpserver, database, snapshot, tmp_path
):
    token = make_token()
    event_id = register_while_the_webhook_is_down(run_cli, httpserver, token, make_model())
    slow = Receiver(httpserver, delay=6)
    env = webhook_env(slow.url, HOKUSAI_WEBHOOK_TIMEOUT="30")
    relay = subprocess.Popen(
        cli("events", "relay", "--event-id", event_id),
        env={**cli_env, **env},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not slow.requests and time.monotonic() < deadline:
            time.sleep(0.05)
        assert slow.requests, "the relay never sent the event"
        before = snapshot(token)

        refused = run_cli("token", "reset", token, env=env)

        assert_one_clear_line(refused, 3, f"event {event_id} is being sent to webhook by a relay")
        assert snapshot(token) == before
    finally:
        out, err = relay.communicate(timeout=60)
    assert relay.returncode == 0, (out, err)
    assert deliveries(database, event_id)["webhook"]["status"] == "delivered"
    after = run_cli("token", "reset", token, "--output", "json", env=env)
    assert after.code == 0, after.output
    assert after.json["cancelled"] == []  # it was delivered: nothing to withdraw
