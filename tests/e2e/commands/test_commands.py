"""The other commands as a user runs them: db upgrade, token create/show, events relay, doctor, the demo."""

from __future__ import annotations

import uuid

import pytest

from hokusai_action.db.store import HEAD_REVISION
from tests.services import free_port

pytestmark = [pytest.mark.e2e]


def test_db_upgrade_token_create_and_show_on_a_fresh_sqlite_file(run_cli, tmp_path):
    env = {"HOKUSAI_DATABASE_URL": f"sqlite:///{tmp_path / 'site.db'}"}
    first = run_cli("db", "upgrade", env=env)
    assert first.code == 0, first.stderr
    assert f"upgraded from empty to revision {HEAD_REVISION}" in first.stdout
    assert f"up to date (revision {HEAD_REVISION})" in run_cli("db", "upgrade", env=env).stdout

    created = run_cli("token", "create", "xray", "--metadata", '{"owner": "radiology"}', "--output", "json", env=env)
    assert created.code == 0, created.stderr
    assert created.json["token_id"] == "XRAY"
    assert created.json["model_status"] == "draft"
    assert created.json["metadata"] == {"owner": "radiology"}

    again = run_cli("token", "create", "XRAY", env=env)
    assert again.code == 3
    assert "error: Token XRAY already exists (status draft)" in again.stderr

    shown = run_cli("token", "show", "XRAY", env=env)
    assert shown.code == 0
    assert "model_status       draft" in shown.stdout

    missing = run_cli("token", "show", "NOPE", env=env)
    assert missing.code == 3
    assert "Token NOPE does not exist" in missing.stderr

    bad = run_cli("token", "create", "bad token!", env=env)
    assert bad.code == 2
    assert "Token id 'bad token!' is not valid" in bad.stderr


def test_token_reset_and_register_again_on_a_sqlite_file(run_cli, make_model, tmp_path):
    from tests.helpers import register_args

    env = {"HOKUSAI_DATABASE_URL": f"sqlite:///{tmp_path / 'site.db'}"}
    assert run_cli("db", "upgrade", env=env).code == 0
    token = f"R{uuid.uuid4().hex[:10]}".upper()
    assert run_cli("token", "create", token, env=env).code == 0
    model = make_model()
    first = run_cli(*register_args(token, model, "--output", "json"), env=env)
    assert first.code == 0, first.stderr

    reset = run_cli("token", "reset", token.lower(), env=env)
    assert reset.code == 0, reset.stderr
    assert f"Token {token} reset from registered to draft." in reset.stdout
    assert "cleared     model_version (was 1)" in reset.stdout
    shown = run_cli("token", "show", token, "--output", "json", env=env)
    assert (shown.json["model_status"], shown.json["event_id"]) == ("draft", None)
    assert "event_deliveries" not in shown.json

    again = run_cli(*register_args(token, model, "--output", "json"), env=env)
    assert again.code == 0, again.stderr
    assert again.json["model_version"] == first.json["model_version"]
    assert again.json["event_id"] != first.json["event_id"]

    missing = run_cli("token", "reset", "NOPE", env=env)
    assert missing.code == 3
    assert "Token NOPE does not exist" in missing.stderr


def test_events_relay_with_nothing_pending_exits_0(run_cli, tmp_path):
    env = {"HOKUSAI_DATABASE_URL": f"sqlite:///{tmp_path / 'site.db'}"}  # other tests leave dead letters behind
    assert run_cli("db", "upgrade", env=env).code == 0
    result = run_cli("events", "relay", "--output", "json", env=env)
    assert result.code == 0, result.stderr
    assert result.json["failed"] == []


def test_doctor_reports_each_service(run_cli):
    healthy = run_cli("doctor", "--output", "json")
    assert healthy.code == 0, healthy.stderr
    assert healthy.json["ok"] is True and "error" not in healthy.json
    checks = {item["check"]: item for item in healthy.json["checks"]}
    assert checks["database"]["ok"] and f"schema revision {HEAD_REVISION}" in checks["database"]["detail"]
    assert checks["mlflow"]["ok"]
    assert checks["events"]["ok"]

    down = run_cli(
        "doctor", env={"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}", "HOKUSAI_MLFLOW_TIMEOUT": "1"}
    )
    assert down.code == 4
    assert "FAIL mlflow" in down.stdout
    assert "ok   database" in down.stdout


def test_a_plain_postgresql_url_uses_psycopg2(run_cli, services):
    """SQLAlchemy 2.1 maps postgresql:// to psycopg 3; the tool and the site use psycopg2."""
    plain = services.database_url.replace("postgresql+psycopg2://", "postgresql://")
    result = run_cli("db", "upgrade", env={"HOKUSAI_DATABASE_URL": plain})
    assert result.code == 0, result.stderr


def test_a_database_url_with_a_bad_port_is_bad_input(run_cli):
    result = run_cli("db", "upgrade", env={"HOKUSAI_DATABASE_URL": "postgresql://u:secretpw@db:notaport/x"})
    assert result.code == 2
    assert "not a valid SQLAlchemy URL" in result.stderr
    assert "secretpw" not in result.output
