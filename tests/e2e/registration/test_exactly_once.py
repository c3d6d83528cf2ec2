"""Exactly once: races have one winner, a killed run converges on re-run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa

from hokusai_action.db.schema import tokens
from hokusai_action.db.store import try_claim
from tests.conftest import REPO
from tests.helpers import CLI_PYTHON, register_args, registration_settings

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def register_cmd(token: str, model) -> list[str]:
    return [CLI_PYTHON, "-m", "hokusai_action", *register_args(token, model, "--output", "json")]


def waiting_on_locks(connection: sa.Connection) -> int:
    # pg_stat_activity is a per-transaction snapshot: read it in a fresh one each time
    connection.execute(sa.text("SELECT pg_stat_clear_snapshot()"))
    return connection.execute(
        sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'hokusai-ml-platform' "
            "AND wait_event_type = 'Lock' AND datname = current_database()"
        )
    ).scalar_one()


def test_eight_racing_runs_have_exactly_one_winner(cli_env, services, make_token, make_model, snapshot, tmp_path):
    token = make_token()
    model = make_model()
    engine = sa.create_engine(services.database_url)
    try:
        with (
            engine.connect() as holder,
            engine.connect().execution_options(isolation_level="AUTOCOMMIT") as observer,
        ):
            # Hold the token's row lock so that all eight runs reach the claim before any can take it:
            # the race is then decided by PostgreSQL alone, not by how fast each process starts.
            transaction = holder.begin()
            holder.execute(sa.select(tokens).where(tokens.c.token_id == token).with_for_update())
            processes = [
                subprocess.Popen(
                    register_cmd(token, model),
                    env=cli_env,
                    cwd=tmp_path,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for _ in range(8)
            ]
            deadline = time.monotonic() + 180
            while waiting_on_locks(observer) < 8 and time.monotonic() < deadline:
                if any(p.poll() is not None for p in processes):
                    break
                time.sleep(0.2)
            assert waiting_on_locks(observer) == 8, [p.communicate() for p in processes if p.poll() is not None]
            transaction.rollback()
        outcomes = [(p.wait(timeout=300), *p.communicate()) for p in processes]
    finally:
        engine.dispose()

    codes = sorted(code for code, _, _ in outcomes)
    assert codes == [0, 3, 3, 3, 3, 3, 3, 3], [err for _, _, err in outcomes]
    for code, _, err in outcomes:
        if code == 3:
            assert f"Token {token} is being registered by another run" in err
    after = snapshot(token)
    assert after.versions == ("1",)
    assert after.events == 1
    assert after.token["model_status"] == "registered"


def test_killed_run_converges_on_rerun(cli_env, database, make_token, make_model, snapshot, tmp_path):
    token = make_token()
    model = make_model(files={f"shard-{i}.bin": os.urandom(8 * 1024 * 1024) for i in range(4)})
    process = subprocess.Popen(
        register_cmd(token, model), env=cli_env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    status = "draft"
    while status == "draft" and time.monotonic() < deadline and process.poll() is None:
        status = snapshot(token).token["model_status"]
        time.sleep(0.05)
    assert status == "registering", "the run never claimed the token"
    process.send_signal(signal.SIGKILL)  # mid-upload: no chance to clean up
    process.wait(timeout=30)
    assert snapshot(token).token["model_status"] == "registering"

    rerun = subprocess.run(
        register_cmd(token, model), env=cli_env, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )

    assert rerun.returncode == 0, rerun.stderr
    after = snapshot(token)
    assert after.token["model_status"] == "registered"
    assert after.versions == ("1",)
    assert after.events == 1


def test_run_killed_after_mlflow_registered_reuses_the_version(
    cli_env, services, database, make_token, make_model, snapshot, mlflow_client, tmp_path, monkeypatch
):
    """The worst moment: MLflow holds the version but the database never heard of it."""
    from hokusai_action.mlflow.registry import MlflowRegistry
    from hokusai_action.registration.register import _params, _tags
    from hokusai_action.registration.request import build_request

    token = make_token()
    model = make_model()
    settings = registration_settings(token, model, environ=cli_env, cwd=tmp_path)
    request = build_request(settings)
    dead_owner = _dead_owner()
    with database.unit_of_work() as uow:
        assert try_claim(uow, token, owner=dead_owner, ttl_seconds=3600)
        uow.commit()
    registry = MlflowRegistry(services.mlflow_url, experiment="hokusai", timeout=10)
    version = registry.upload_and_register(
        request.model,
        model_name=request.model_name,
        token_id=token,
        tags=_tags(request),
        params=_params(request),
        metric_name="auroc",
        metric_value=request.gate.value,
    )
    assert snapshot(token).versions == (version.version,)

    rerun = subprocess.run(
        register_cmd(token, model), env=cli_env, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )

    assert rerun.returncode == 0, rerun.stderr
    assert '"model_version": "1"' in rerun.stdout
    after = snapshot(token)
    assert after.versions == ("1",)
    assert after.token["model_status"] == "registered"
    assert after.token["mlflow_run_id"] == version.run_id


def _dead_owner() -> str:
    """The claim owner id of a process that has exited (and been reaped) on this host."""
    done = subprocess.run(
        [sys.executable, "-c", "from hokusai_action.db.owner import claim_owner_id; print(claim_owner_id())"],
        capture_output=True, text=True, check=True, cwd=REPO,
    )  # fmt: skip
    return done.stdout.strip()


def test_sigterm_mid_upload_releases_the_claim(cli_env, make_token, make_model, snapshot, mlflow_client, tmp_path):
    """`docker stop` or a cancelled CI job: the run gives the token back instead of leaving it claimed."""
    token = make_token()
    model = make_model(files={f"shard-{i}.bin": os.urandom(8 * 1024 * 1024) for i in range(4)})
    process = subprocess.Popen(register_cmd(token, model), env=cli_env, cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while snapshot(token).token["model_status"] == "draft" and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, err
    after = snapshot(token)
    assert after.token["model_status"] == "draft"
    assert after.token["claim_owner"] is None
    assert after.events == 0
