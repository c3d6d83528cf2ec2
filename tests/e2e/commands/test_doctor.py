"""`doctor` when something is wrong, as a user meets it: every check bounded to a few seconds and run
side by side, one clean line per failure with what to do, and a failing exit whenever `model register`
would fail (the Google identities: tests/e2e/commands/test_doctor_google.py)."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import pytest

from tests.faults import WebhookReceiver
from tests.services import free_port

pytestmark = [pytest.mark.e2e]

# a check waits at most a few seconds and the checks run side by side: with MLflow down doctor used to
# take 29 s (MLflow's 30 s budget), and each hung service would add its own timeout
# a bound on a doctor run that waits on a dead service: well under the ~30 s it took before its checks
# were bounded, with room for a CLI that starts slowly on a loaded machine
DOCTOR_WALL_SECONDS = 20.0
RAW_CLIENT_TEXT = ("HTTPConnectionPool", "Max retries", "NewConnectionError", "urllib3", "object at 0x")


@contextlib.contextmanager
def hung_service() -> Iterator[str]:
    """The base URL of a port that accepts connections (the kernel's backlog) and never answers."""
    with socket.create_server(("127.0.0.1", 0), backlog=64) as listener:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def doctor(run_cli, *args: str, env: dict[str, str] | None = None):
    started = time.monotonic()
    result = run_cli("doctor", *args, env=env)
    return result, time.monotonic() - started


def checks_of(result) -> dict[str, dict]:
    data = result.json
    assert set(data) >= {"ok", "checks"}, data
    return {check["check"]: check for check in data["checks"]}


def test_mlflow_refusing_is_one_clean_line_with_what_to_do_and_quick(run_cli):
    dead = f"http://127.0.0.1:{free_port()}"

    result, seconds = doctor(run_cli, env={"MLFLOW_TRACKING_URI": dead})

    assert result.code == 4, result.output
    assert seconds < DOCTOR_WALL_SECONDS
    failed = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert failed == [f"FAIL mlflow    MLflow at {dead} did not answer within 4 s (Connection refused)."]
    assert "Check MLFLOW_TRACKING_URI" in result.stdout
    assert "ok   database" in result.stdout
    for text in (*RAW_CLIENT_TEXT, "Nothing was uploaded", "HOKUSAI_MLFLOW_TIMEOUT"):
        assert text not in result.output, text
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert error.startswith("error: doctor found 1 problem: mlflow: ")


def test_a_hung_mlflow_in_json_is_one_object_with_the_checks_and_the_error(run_cli):
    with hung_service() as hung:
        result, seconds = doctor(run_cli, "--output", "json", env={"MLFLOW_TRACKING_URI": hung})

    assert result.code == 4, result.output
    assert seconds < DOCTOR_WALL_SECONDS
    data = result.json
    checks = checks_of(result)
    assert data["ok"] is False
    assert checks["mlflow"]["ok"] is False
    assert checks["mlflow"]["detail"] == f"MLflow at {hung} did not answer within 4 s (timed out)."
    assert checks["mlflow"]["hint"].startswith("Check MLFLOW_TRACKING_URI")
    assert (checks["database"]["ok"], checks["database"]["hint"]) == (True, None)
    assert data["error"] == {
        "exit_code": 4,
        "kind": "service_unavailable",
        "message": "mlflow: " + checks["mlflow"]["detail"],
        "hint": checks["mlflow"]["hint"],
    }


def test_a_missing_schema_fails_as_register_would(run_cli, tmp_path):
    env = {"HOKUSAI_DATABASE_URL": f"sqlite:///{tmp_path / 'fresh.db'}"}

    result = run_cli("doctor", "--output", "json", env=env)

    assert result.code == 2, result.output  # register's exit for it
    database = checks_of(result)["database"]
    assert database["ok"] is False
    assert "has no registration schema" in database["detail"]
    assert "hokusai-ml-platform db upgrade" in database["hint"]
    assert result.json["error"]["kind"] == "input"

    assert run_cli("db", "upgrade", env=env).code == 0
    assert run_cli("doctor", env=env).code == 0


def test_a_webhook_that_does_not_answer_fails_and_one_that_answers_gets_no_event(run_cli, httpserver):
    sinks = {"HOKUSAI_EVENT_SINKS": "webhook,database"}
    with hung_service() as hung:
        result, seconds = doctor(run_cli, "--output", "json", env={**sinks, "HOKUSAI_WEBHOOK_URL": f"{hung}/hook"})

    assert result.code == 4, result.output
    assert seconds < DOCTOR_WALL_SECONDS
    events = checks_of(result)["events"]
    assert events["ok"] is False
    assert f"webhook at {hung}/hook did not answer within 4 s" in events["detail"]
    assert "HOKUSAI_WEBHOOK_URL" in events["hint"]

    receiver = WebhookReceiver(httpserver)
    httpserver.expect_request("/hook", method="HEAD").respond_with_data("", status=405)  # POST only, as most are
    answered = run_cli("doctor", "--output", "json", env={**sinks, "HOKUSAI_WEBHOOK_URL": receiver.url})

    assert answered.code == 0, answered.output
    events = checks_of(answered)["events"]
    assert events["ok"] is True and "webhook (answered HTTP 405" in events["detail"]
    assert receiver.requests == []  # doctor delivers nothing


def test_checks_run_side_by_side(run_cli):
    """Two hung services cost doctor about what one does: its checks wait side by side. Compared
    with a run of one hung service on the same machine, so a slow start cancels out."""
    from hokusai_action.commands.doctor import DOCTOR_SECONDS

    with hung_service() as mlflow:
        _, one = doctor(run_cli, "--output", "json", env={"MLFLOW_TRACKING_URI": mlflow})
    with hung_service() as mlflow, hung_service() as webhook:
        env = {
            "MLFLOW_TRACKING_URI": mlflow,
            "HOKUSAI_EVENT_SINKS": "webhook,database",
            "HOKUSAI_WEBHOOK_URL": f"{webhook}/hook",
        }
        result, two = doctor(run_cli, "--output", "json", env=env)

    assert result.code == 4, result.output
    assert {name for name, check in checks_of(result).items() if not check["ok"]} == {"mlflow", "events"}
    assert two - one < DOCTOR_SECONDS * 0.75, (one, two)  # one after the other: a whole DOCTOR_SECONDS more
