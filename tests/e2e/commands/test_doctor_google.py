"""`doctor` names the Google identity of the Pub/Sub sink (the GCS side: tests/e2e/mlflow/test_gcs_topology.py)."""

from __future__ import annotations

import json

import pytest

from tests.google_credentials import service_account

pytestmark = [pytest.mark.e2e]


def test_doctor_says_the_pubsub_emulator_needs_no_credentials(run_cli, pubsub_emulator, pubsub_topic, tmp_path):
    info, secrets = service_account()
    credentials = tmp_path / "key.json"
    credentials.write_text(json.dumps(info))
    env = {
        "HOKUSAI_EVENT_SINKS": "pubsub,database",
        "HOKUSAI_PUBSUB_TOPIC": pubsub_topic.topic,
        "HOKUSAI_PUBSUB_TIMEOUT": "5",
        "PUBSUB_EMULATOR_HOST": pubsub_emulator.host,
        "GOOGLE_APPLICATION_CREDENTIALS": str(credentials),  # the emulator wins: Google's client ignores it
        "STORAGE_EMULATOR_HOST": "",  # empty is unset for Google's client (the GCS fixture may have set it)
    }

    result = run_cli("doctor", "--output", "json", env=env)

    assert result.code == 0, result.output
    checks = {item["check"]: item for item in result.json["checks"]}
    assert checks["pubsub auth"] == {
        "check": "pubsub auth",
        "ok": True,
        "detail": f"emulator at {pubsub_emulator.host} (PUBSUB_EMULATOR_HOST), no credentials",
        "hint": None,
    }
    assert "gcs auth" not in checks  # nothing here writes to GCS
    for secret in secrets:
        assert secret not in result.output


def test_doctor_without_the_pubsub_sink_names_no_google_identity(run_cli):
    result = run_cli("doctor", "--output", "json", env={"HOKUSAI_EVENT_SINKS": "database", "STORAGE_EMULATOR_HOST": ""})
    assert result.code == 0, result.output
    assert not [item for item in result.json["checks"] if item["check"].endswith(" auth")]
