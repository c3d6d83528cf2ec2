"""A token reset to draft (`token reset`, or the site's reset) is registered again as a new registration."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from hokusai_action.db.schema import events, tokens
from hokusai_action.events.model import event_id_for
from tests.helpers import register_args

pytestmark = [pytest.mark.e2e]


def event_ids(database, token: str) -> list[str]:
    with database.unit_of_work() as uow:
        rows = uow.execute(sa.select(events.c.event_id).where(events.c.token_id == token)).all()
    return sorted(str(row.event_id) for row in rows)


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
    from tests.e2e.test_streamed_upload import logged_models

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

    # the site's own reset: the documented columns back to draft, nothing else
    with database.unit_of_work() as uow:
        uow.execute(
            tokens.update()
            .where(tokens.c.token_id == token)
            .values(model_status="draft", artifact_digest=None, mlflow_run_id=None, model_version=None)
        )
        uow.commit()
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
    with database.unit_of_work() as uow:
        uow.execute(
            tokens.update()
            .where(tokens.c.token_id == token)
            .values(
                model_status="registering",
                claim_owner="elsewhere:1:abcd",
                claim_expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5),
            )
        )
        uow.commit()
    before = snapshot(token)

    result = run_cli("token", "reset", token)

    assert result.code == 3
    assert f"Token {token} is being registered by another run (elsewhere:1:abcd" in result.stderr
    assert snapshot(token) == before


def test_reset_an_expired_claim_and_a_draft_token(run_cli, make_token, database):
    token = make_token()
    assert run_cli("token", "reset", token, "--output", "json").json["cleared"] == {}
    with database.unit_of_work() as uow:
        uow.execute(
            tokens.update()
            .where(tokens.c.token_id == token)
            .values(
                model_status="registering",
                claim_owner="elsewhere:1:abcd",
                claim_expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5),
            )
        )
        uow.commit()

    result = run_cli("token", "reset", token, "--output", "json")

    assert result.code == 0, result.stderr
    assert result.json["cleared"]["claim_owner"] == "elsewhere:1:abcd"
    assert token_row(database, token).model_status == "draft"
