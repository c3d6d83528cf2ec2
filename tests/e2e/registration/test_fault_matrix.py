"""The fault matrix: a run stopped at every phase boundary (SIGKILL, SIGTERM), then re-run; and faults of
the outside services (MLflow killed mid-upload, a lost create-version answer, the database connection
cut before the commit, the Pub/Sub emulator killed after a publish). After every case ONE checker
(``tests.faults.check_invariants``) asserts the end state; the figures are printed at the end.

Failpoints are described in ``hokusai_action/failpoints.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hokusai_action.digest.hashing import inspect_model
from tests.faults import (
    WEBHOOK_SECRET,
    DroppingHttpProxy,
    PubSubProbe,
    WebhookReceiver,
    check_invariants,
    other_tokens_state,
    run_to_failpoint,
)
from tests.helpers import CLI_PYTHON, register_args

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PHASES = (
    "after_claim",
    "mid_upload",
    "after_finalize",
    "after_version_created",
    "before_commit",
    "after_commit",
    "after_publish.pubsub",
    "after_publish.webhook",
    "before_mark_delivered",
)
SIGNALS = {"kill": -signal.SIGKILL, "term": 128 + signal.SIGTERM}


def shards(count: int = 6, size: int = 256 * 1024) -> dict[str, bytes]:
    """Fresh random files (a digest of its own per case); several, so mid_upload is mid-way."""
    return {f"shard-{i}.bin": os.urandom(size) for i in range(count)}


def register_cmd(token: str, model: Path) -> list[str]:
    return [CLI_PYTHON, "-m", "hokusai_action", *register_args(token, model, "--output", "json")]


def sink_env(*, webhook: WebhookReceiver | None = None, topic: str | None = None, emulator=None) -> dict[str, str]:
    sinks = ["database"]
    env = {"HOKUSAI_PUBSUB_TIMEOUT": "5", "HOKUSAI_WEBHOOK_TIMEOUT": "5"}
    if webhook is not None:
        sinks.append("webhook")
        env.update(HOKUSAI_WEBHOOK_URL=webhook.url, HOKUSAI_WEBHOOK_SECRET=WEBHOOK_SECRET)
    if topic is not None:
        sinks.append("pubsub")
        env.update(HOKUSAI_PUBSUB_TOPIC=topic, PUBSUB_EMULATOR_HOST=emulator.host)
    return {**env, "HOKUSAI_EVENT_SINKS": ",".join(sinks)}


def digest_of(model: Path) -> str:
    """The model's digest as the tool computes it (in-process: one CLI start less per case)."""
    return inspect_model(model).digest


def assert_converged(verdict, rerun_code: int, rerun_output: str) -> None:
    assert rerun_code == 0, rerun_output
    assert verdict.problems == [], verdict.problems
    assert verdict.versions_duplicated == 0
    assert verdict.events_lost == 0


# ------------------------------------------------------------------------------ the matrix


@pytest.mark.parametrize("action", sorted(SIGNALS))
@pytest.mark.parametrize("phase", PHASES)
def test_stopped_at_a_phase_then_rerun_converges(
    phase, action, cli_env, run_cli, database, mlflow_client, make_token, make_model,
    pubsub_emulator, pubsub_topic, httpserver, fault_tally, tmp_path,
):  # fmt: skip
    token, model = make_token(), make_model(files=shards())
    webhook = WebhookReceiver(httpserver)
    env = {**cli_env, **sink_env(webhook=webhook, topic=pubsub_topic.topic, emulator=pubsub_emulator)}
    digest = digest_of(model)
    others = other_tokens_state(database, token)

    first = run_to_failpoint(register_cmd(token, model), env=env, cwd=tmp_path, failpoint=f"{phase}:{action}")
    rerun = run_cli(*register_args(token, model, "--output", "json"), env=env)
    verdict = check_invariants(
        database=database, mlflow_client=mlflow_client, token_id=token, digest=digest, others_before=others,
        webhook=webhook, pubsub=PubSubProbe(pubsub_emulator, pubsub_topic.subscription),
    )  # fmt: skip
    fault_tally.record(f"{phase}:{action}", reached=first.reached, rerun_ok=rerun.code == 0, verdict=verdict)

    assert first.reached, f"the run never reached {phase}:\n{first.stderr}"
    assert first.code == SIGNALS[action], first.stderr
    assert_converged(verdict, rerun.code, rerun.output)
    assert rerun.json["event_id"] == verdict.event_id


# ------------------------------------------------------------------------- outside faults


def test_mlflow_killed_mid_upload_and_restarted(
    cli_env, run_cli, database, make_token, make_model, own_mlflow, httpserver, fault_tally, tmp_path
):
    token, model = make_token(), make_model(files=shards(12, 512 * 1024))
    webhook = WebhookReceiver(httpserver)
    env = {
        **cli_env,
        **sink_env(webhook=webhook),
        "MLFLOW_TRACKING_URI": own_mlflow.url,
        "HOKUSAI_MLFLOW_TIMEOUT": "10",
        # MLflow's own backoff setting (a whole number), 0 instead of the registry's 1: each call's three
        # retries against the dead server wait only the jitter (up to 0.5 s), not 2 + 4 s; same retries
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
    }
    digest = digest_of(model)
    others = other_tokens_state(database, token)

    # each upload worker pauses after its first file; meanwhile the server dies (SIGKILL takes well
    # under a second), so the rest fail
    first = run_to_failpoint(
        register_cmd(token, model), env=env, cwd=tmp_path, failpoint="mid_upload:sleep:2", at_failpoint=own_mlflow.kill
    )
    assert first.reached, first.stderr
    assert first.code == 4, first.stderr
    assert first.stderr.strip().splitlines()[-1].startswith("error: "), first.stderr
    assert "Traceback" not in first.stderr
    own_mlflow.restart()
    rerun = run_cli(*register_args(token, model, "--output", "json"), env=env)
    verdict = check_invariants(
        database=database, mlflow_client=own_mlflow.client(), token_id=token, digest=digest,
        others_before=others, webhook=webhook,
    )  # fmt: skip
    fault_tally.record("mlflow killed mid-upload", reached=first.reached, rerun_ok=rerun.code == 0, verdict=verdict)
    assert_converged(verdict, rerun.code, rerun.output)


def test_lost_answer_to_create_version_is_retried_into_the_same_version(
    cli_env, run_cli, services, database, mlflow_client, make_token, make_model, httpserver, fault_tally
):
    token, model = make_token(), make_model(files=shards())
    webhook = WebhookReceiver(httpserver)
    env = {**cli_env, **sink_env(webhook=webhook)}
    digest = digest_of(model)
    others = other_tokens_state(database, token)
    proxy = DroppingHttpProxy(services.mlflow_url, drops=1)
    try:
        result = run_cli(
            *register_args(token, model, "--output", "json"), env={**env, "MLFLOW_TRACKING_URI": proxy.url}
        )
    finally:
        proxy.close()
    verdict = check_invariants(
        database=database, mlflow_client=mlflow_client, token_id=token, digest=digest, others_before=others,
        webhook=webhook,
    )  # fmt: skip
    fault_tally.record("create-version answer lost", reached=proxy.dropped == 1, rerun_ok=result.code == 0,
                       verdict=verdict)  # fmt: skip

    assert proxy.dropped == 1, "the proxy never dropped the answer to model-versions/create"
    # the client looked the version up by its digest tag instead of creating a second one
    assert proxy.creates_forwarded == 1
    assert_converged(verdict, result.code, result.output)
    assert result.json["model_version"] == "1"


def test_database_connection_cut_before_commit_then_restored(
    cli_env, run_cli, database, mlflow_client, make_token, make_model, pg_proxy, httpserver, fault_tally, tmp_path
):
    proxy, proxied_url = pg_proxy
    token, model = make_token(), make_model(files=shards())
    webhook = WebhookReceiver(httpserver)
    env = {**cli_env, **sink_env(webhook=webhook), "HOKUSAI_DATABASE_URL": proxied_url}
    digest = digest_of(model)
    others = other_tokens_state(database, token)

    first = run_to_failpoint(
        register_cmd(token, model), env=env, cwd=tmp_path, failpoint="before_commit:sleep:3", at_failpoint=proxy.cut
    )
    assert first.reached, first.stderr
    assert proxy.cuts == 1
    assert first.code == 4, first.stderr
    assert first.stderr.strip().splitlines()[-1].startswith("error: "), first.stderr
    assert "Traceback" not in first.stderr
    with database.unit_of_work() as uow:
        from hokusai_action.db.store import get_token

        assert get_token(uow, token).model_status != "registered"  # nothing committed
    proxy.restore()
    rerun = run_cli(*register_args(token, model, "--output", "json"), env=env)
    verdict = check_invariants(
        database=database, mlflow_client=mlflow_client, token_id=token, digest=digest, others_before=others,
        webhook=webhook,
    )  # fmt: skip
    fault_tally.record("database cut before commit", reached=first.reached, rerun_ok=rerun.code == 0, verdict=verdict)
    assert_converged(verdict, rerun.code, rerun.output)


def test_pubsub_emulator_killed_after_a_publish_and_restarted(
    cli_env, run_cli, database, mlflow_client, make_token, make_model, pubsub_emulator, pubsub_topic,
    httpserver, fault_tally, tmp_path,
):  # fmt: skip
    """Run A publishes, then the emulator is SIGKILLed while A is still running; run B finds it down
    (exit 5, event pending); the emulator restarts; `events relay` delivers B's event with B's id."""
    probe = PubSubProbe(pubsub_emulator, pubsub_topic.subscription)
    first_token, second_token = make_token(), make_token()
    first_model, second_model = make_model(files=shards()), make_model(files=shards())
    hooks = {first_token: WebhookReceiver(httpserver, "/hook-a"), second_token: WebhookReceiver(httpserver, "/hook-b")}
    envs = {
        token: {**cli_env, **sink_env(webhook=hooks[token], topic=pubsub_topic.topic, emulator=pubsub_emulator)}
        for token in hooks
    }
    digests = {
        first_token: digest_of(first_model),
        second_token: digest_of(second_model),
    }
    others = other_tokens_state(database, first_token, second_token)

    def kill_emulator() -> None:
        probe.drain(first_token, wait_first=10)  # the emulator keeps messages in memory only: read them first
        os.killpg(pubsub_emulator.pid, signal.SIGKILL)
        pubsub_emulator.stop()

    first = run_to_failpoint(
        register_cmd(first_token, first_model), env=envs[first_token], cwd=tmp_path,
        failpoint="after_publish.pubsub:sleep:2", at_failpoint=kill_emulator,
    )  # fmt: skip
    try:
        # the run that published finishes although its emulator is gone
        assert first.reached, first.stderr
        assert first.code == 0, first.stderr
        assert probe.ids_for(first_token) == [first.json["event_id"]]
        # the next registration cannot publish: registered, its event pending (exit 5); every Pub/Sub
        # call fails until its timeout (the preflight, then the publish), so a short one ends it sooner
        second = run_cli(
            *register_args(second_token, second_model, "--output", "json"),
            env={**envs[second_token], "HOKUSAI_PUBSUB_TIMEOUT": "1"},
        )
        assert second.code == 5, second.output
        assert second.json["events_delivered"]["pubsub"] is False
    finally:
        pubsub_emulator.start()  # same port; the topic and subscription are made again
    # this event only: the session database also holds other tests' undeliverable events
    relay = run_cli("events", "relay", "--event-id", second.json["event_id"], env=envs[second_token])
    verdicts = [
        check_invariants(
            database=database,
            mlflow_client=mlflow_client,
            token_id=token,
            digest=digests[token],
            others_before=others,
            others_excluded=tuple(t for t in hooks if t != token),
            webhook=hooks[token],
            pubsub=probe,
        )
        for token in (first_token, second_token)
    ]
    for name, verdict in zip(("A published, then emulator killed", "B while down, relayed"), verdicts, strict=True):
        fault_tally.record(
            f"pubsub emulator: {name}", reached=first.reached, rerun_ok=relay.code == 0, verdict=verdict,
            new_fault=verdict is verdicts[0],
        )  # fmt: skip

    assert relay.code == 0, relay.output
    for verdict in verdicts:
        assert verdict.problems == [], verdict.problems
    assert set(probe.ids_for(second_token)) == {second.json["event_id"]}


RETRY_BOUND_PROBE = """
import os, sys
from hokusai_action.mlflow.registry import MlflowRegistry
registry = MlflowRegistry(sys.argv[1], experiment="hokusai", timeout=10)
registry.check_reachable()
print(os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES"))
"""


def test_the_upload_retry_bound_survives_the_first_contact_with_mlflow(services, cli_env, tmp_path):
    """The user-visible cost is in test_mlflow_killed_mid_upload_and_restarted's duration; this is its cause."""
    done = subprocess.run(
        [sys.executable, "-c", RETRY_BOUND_PROBE, services.mlflow_url],
        env=cli_env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "3"
