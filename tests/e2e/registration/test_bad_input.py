"""Every bad input named in the PRD: one clear line, the documented exit code, nothing changed."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from tests.helpers import assert_one_clear_line, register_args, set_token
from tests.services import free_port

pytestmark = [pytest.mark.e2e]


def register(run_cli, token, model, *extra, metric="auroc", baseline="0.82", env=None):
    return run_cli(*register_args(token, model, *extra, metric=metric, baseline=baseline), env=env)


def test_token_missing(run_cli, make_model, snapshot):
    result = register(run_cli, "NOSUCHTOKEN", make_model())
    assert_one_clear_line(result, 3, "Token NOSUCHTOKEN does not exist", "token create NOSUCHTOKEN")
    assert snapshot("NOSUCHTOKEN").token is None
    assert snapshot("NOSUCHTOKEN").versions == ()


@pytest.mark.parametrize("status", ["deployed", "archived", "failed"])
def test_token_not_draft(run_cli, make_token, make_model, database, snapshot, status):
    token = make_token()
    set_token(database, token, model_status=status)
    before = snapshot(token)
    result = register(run_cli, token, make_model())
    assert_one_clear_line(result, 3, f"Token {token} is '{status}'; only a draft token can be registered")
    assert snapshot(token) == before


def test_another_run_holds_the_claim(run_cli, make_token, make_model, database, snapshot):
    token = make_token()
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=30)
    set_token(
        database,
        token,
        model_status="registering",
        claim_owner="ci-runner-7:4242:abcd",
        claim_expires_at=expires,
    )
    before = snapshot(token)
    result = register(run_cli, token, make_model())
    assert_one_clear_line(result, 3, f"Token {token} is being registered by another run (ci-runner-7:4242:abcd")
    assert snapshot(token) == before


def test_expired_claim_is_taken_over(run_cli, make_token, make_model, database, snapshot):
    token = make_token()
    expired = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    set_token(database, token, model_status="registering", claim_owner="gone:1:dead", claim_expires_at=expired)
    result = register(run_cli, token, make_model(), "--output", "json")
    assert result.code == 0, result.stderr
    assert snapshot(token).token["model_status"] == "registered"


def test_model_path_missing(run_cli, make_token, snapshot, tmp_path):
    token = make_token()
    before = snapshot(token)
    result = register(run_cli, token, tmp_path / "does-not-exist")
    assert_one_clear_line(result, 2, "does-not-exist does not exist", "--model-path")
    assert snapshot(token) == before


def test_model_path_unreadable(run_cli, make_token, make_model, snapshot):
    # tests run as root, which reads any mode; a dangling link is a file nobody can read
    token = make_token()
    model = make_model()
    (model / "shard-2.bin").symlink_to(model / "missing-target")
    before = snapshot(token)
    result = register(run_cli, token, model)
    assert_one_clear_line(result, 2, "shard-2.bin is not a regular file or directory")
    assert snapshot(token) == before


def test_model_directory_empty(run_cli, make_token, snapshot, tmp_path):
    token = make_token()
    (tmp_path / "empty").mkdir()
    before = snapshot(token)
    result = register(run_cli, token, tmp_path / "empty")
    assert_one_clear_line(result, 2, "holds no files")
    assert snapshot(token) == before


def test_unknown_metric_lists_supported(run_cli, make_token, make_model, snapshot):
    token = make_token()
    before = snapshot(token)
    result = register(run_cli, token, make_model(), metric="auprc")
    assert_one_clear_line(result, 2, "Unknown metric 'auprc'", "auroc (auc, roc_auc", "rmse", "engagement_score")
    assert snapshot(token) == before


def test_metric_missing_from_metrics_file_lists_what_is_there(run_cli, make_token, make_model, snapshot):
    token = make_token()
    model = make_model(metrics={"accuracy": 0.9, "loss": 0.2})
    before = snapshot(token)
    result = register(run_cli, token, model, metric="f1", baseline="0.5")
    assert_one_clear_line(result, 2, "Metric 'f1' is not in", "metrics.json", "it holds: accuracy, loss")
    assert snapshot(token) == before


def test_no_metric_source(run_cli, make_token, make_model, snapshot):
    token = make_token()
    model = make_model(metrics=False)
    before = snapshot(token)
    result = register(run_cli, token, model)
    assert_one_clear_line(result, 2, "No measured value for 'auroc'", "--metric-value")
    assert snapshot(token) == before


@pytest.mark.parametrize(
    ("baseline", "fragment"),
    [
        ("high", "Baseline 'high' is not a number"),
        ("nan", "Baseline must be a finite number, not nan"),
        ("inf", "Baseline must be a finite number, not inf"),
        ("-inf", "Baseline must be a finite number, not -inf"),
        ("1.2", "Baseline 1.2 is outside auroc's range [0, 1]"),
        ("-0.1", "Baseline -0.1 is outside auroc's range [0, 1]"),
    ],
)
def test_unreasonable_baseline(run_cli, make_token, make_model, snapshot, baseline, fragment):
    token = make_token()
    before = snapshot(token)
    result = register(run_cli, token, make_model(), baseline=baseline)
    assert_one_clear_line(result, 2, fragment)
    assert snapshot(token) == before


def test_negative_baseline_for_an_error_metric(run_cli, make_token, make_model, snapshot):
    token = make_token()
    before = snapshot(token)
    result = register(run_cli, token, make_model(metrics={"rmse": 0.3}), metric="rmse", baseline="-3")
    assert_one_clear_line(result, 2, "Baseline -3 is outside rmse's range [0, inf]")
    assert snapshot(token) == before


@pytest.mark.parametrize(
    ("metric", "metrics", "baseline", "fragment"),
    [
        (
            "auroc",
            {"auroc": 0.80},
            "0.82",
            "auroc = 0.8 does not meet the baseline 0.82 (higher is better: it must be >= 0.82)",
        ),
        (
            "rmse",
            {"rmse": 0.5},
            "0.4",
            "rmse = 0.5 does not meet the baseline 0.4 (lower is better: it must be <= 0.4)",
        ),
    ],
)
def test_metric_below_baseline_exit_1(run_cli, make_token, make_model, snapshot, metric, metrics, baseline, fragment):
    token = make_token()
    before = snapshot(token)
    result = register(run_cli, token, make_model(metrics=metrics), metric=metric, baseline=baseline)
    assert_one_clear_line(result, 1, fragment, "The model was not uploaded")
    assert snapshot(token) == before


def test_tie_passes_the_gate(run_cli, make_token, make_model):
    token = make_token()
    result = register(run_cli, token, make_model(metrics={"auroc": 0.82}), "--output", "json")
    assert result.code == 0, result.stderr
    assert result.json["metric"]["passed"] is True


def test_mlflow_unreachable_is_a_bounded_wait_then_exit_4(run_cli, make_token, make_model, snapshot):
    token = make_token()
    before = snapshot(token)
    dead = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = register(run_cli, token, make_model(), env={"MLFLOW_TRACKING_URI": dead, "HOKUSAI_MLFLOW_TIMEOUT": "3"})
    elapsed = time.monotonic() - started
    assert_one_clear_line(result, 4, f"MLflow at {dead} did not answer within 3 s", "HOKUSAI_MLFLOW_TIMEOUT")
    assert elapsed < 20, f"took {elapsed:.1f} s for a 3 s budget"
    after = snapshot(token)
    assert after == before
    assert after.token["model_status"] == "draft"


def test_database_unreachable_exit_4(run_cli, make_model):
    dead = f"postgresql+psycopg2://hokusai:pw-that-must-not-leak@127.0.0.1:{free_port()}/hokusai"
    result = register(run_cli, "XRAY", make_model(), env={"HOKUSAI_DATABASE_URL": dead})
    assert_one_clear_line(result, 4, "The Hokusai database at postgresql+psycopg2://hokusai:***@127.0.0.1")
    assert "pw-that-must-not-leak" not in result.output


def test_schema_not_created_says_run_db_upgrade(run_cli, make_model, tmp_path):
    url = f"sqlite:///{tmp_path / 'blank.db'}"
    result = register(run_cli, "XRAY", make_model(), env={"HOKUSAI_DATABASE_URL": url})
    assert_one_clear_line(result, 2, "has no registration schema", "db upgrade")


def test_secret_never_printed_even_with_debug(run_cli, make_model, services):
    # trust auth ignores the password, so the URL works and the password is a pure canary
    url = services.database_url.replace("postgres@", "postgres:canary-pw-123@")
    for extra in ((), ("--debug",)):
        result = register(run_cli, "NOSUCHTOKEN", make_model(), *extra, env={"HOKUSAI_DATABASE_URL": url})
        assert result.code == 3
        assert "canary-pw-123" not in result.output
    debug = register(run_cli, "NOSUCHTOKEN", make_model(), "--debug", env={"HOKUSAI_DATABASE_URL": url})
    assert "Traceback" in debug.stderr  # --debug does show the (redacted) traceback


def test_hokusai_yaml_unknown_key_and_inline_secret(run_cli, make_token, tmp_path):
    token = make_token()
    (tmp_path / "hokusai.yaml").write_text(f"token_id: {token}\nmetric: auroc\nbaseline: 0.8\nbasline: 0.9\n")
    result = run_cli("model", "register")
    assert_one_clear_line(result, 2, "hokusai.yaml:4: unknown key 'basline'")

    (tmp_path / "hokusai.yaml").write_text(
        "events:\n  webhook:\n    url: https://hooks.example.com/h\n    secret: whsec_abc\n"
    )
    result = run_cli("model", "register")
    assert_one_clear_line(result, 2, "hokusai.yaml:4: 'events.webhook.secret' writes a secret into hokusai.yaml")
    assert "whsec_abc" not in result.output

    (tmp_path / "hokusai.yaml").write_text("database:\n  url: postgresql://u:hunter22@db/hokusai\n")
    result = run_cli("model", "register")
    assert_one_clear_line(result, 2, "hokusai.yaml:2: 'database.url' writes a secret")
    assert "hunter22" not in result.output

    (tmp_path / "hokusai.yaml").write_text("baseline: high\n")
    result = run_cli("model", "register")
    assert_one_clear_line(result, 2, "hokusai.yaml:1: 'baseline' must be a number")


def test_metrics_file_broken_json(run_cli, make_token, make_model, snapshot):
    token = make_token()
    model = make_model(metrics={"auroc": 0.9})
    (model / "metrics.json").write_text("{not json")
    before = snapshot(token)
    result = register(run_cli, token, model)
    assert_one_clear_line(result, 2, "Cannot read metrics file", "not valid JSON/YAML")
    assert snapshot(token) == before


@pytest.mark.parametrize("alias", ["latest", "V3"])
def test_a_reserved_alias_is_refused_before_anything_changes(run_cli, make_token, make_model, snapshot, alias):
    # MLflow refuses these only when the alias is set: after the commit and the event, exit 4 forever
    token = make_token()
    before = snapshot(token)
    result = register(run_cli, token, make_model(), "--set-alias", alias)
    assert_one_clear_line(result, 2, f"--set-alias '{alias}' is reserved by MLflow", "choose another name")
    assert snapshot(token) == before


def test_an_alias_mlflow_cannot_store_is_refused_before_anything_changes(run_cli, make_token, make_model, snapshot):
    token = make_token()
    before = snapshot(token)
    result = register(run_cli, token, make_model(), "--compare-to", "champion\n")
    assert_one_clear_line(result, 2, "--compare-to 'champion\\n' is not a valid MLflow alias")
    assert snapshot(token) == before


def test_a_token_id_with_a_trailing_newline_is_refused(run_cli, database):
    from hokusai_action.db.store import get_token

    result = run_cli("token", "create", "XRAYNL\n")
    assert result.code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stderr.count("\n") == 1, result.stderr  # one line, the newline shown escaped
    assert "Token id 'XRAYNL\\n' is not valid" in result.stderr
    with database.unit_of_work() as uow:
        assert get_token(uow, "XRAYNL\n") is None
        assert get_token(uow, "XRAYNL") is None


def test_a_billion_laughs_hokusai_yaml_is_refused_before_anything_changes(
    run_cli, make_token, make_model, snapshot, tmp_path
):
    # 9 lines that expand to 9**9 values: rejected from the node graph, before any walk or conversion
    token = make_token()
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{n}: &a{n} [{','.join([f'*a{n - 1}'] * 9)}]" for n in range(1, 9)]
    config = tmp_path / "laughs.yaml"
    config.write_text("\n".join(lines) + "\n")
    before = snapshot(token)
    started = time.monotonic()
    result = register(run_cli, token, make_model(), "--config", str(config))
    assert_one_clear_line(result, 2, f"Cannot read config file {config}: its anchors and aliases expand")
    assert time.monotonic() - started < 60
    assert snapshot(token) == before


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0.25", "a whole number of seconds from 0 to 120"),
        ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "500", "a whole number of seconds from 0 to 120"),
        ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "many", "a whole number from 0 to 10"),
        ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "50", "a whole number from 0 to 10"),
        ("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "lots", "a number of seconds from 0 to 3600"),
        ("MLFLOW_HTTP_REQUEST_TIMEOUT", "2.5", "a whole number of seconds from 1 to 1000000"),
    ],
)
def test_an_mlflow_http_variable_mlflow_cannot_use_is_a_settings_error(
    run_cli, make_token, make_model, snapshot, variable, value, fragment
):
    """MLflow reads these as integers (or a float) and checks their limits only when it sends a request:
    a value it cannot use must stop the run before anything changes, naming the variable (exit 2),
    not as an internal error (exit 70) or a service outage (exit 4) halfway through."""
    token = make_token()
    before = snapshot(token)
    result = register(run_cli, token, make_model(), env={variable: value})
    assert_one_clear_line(result, 2, f"{variable} must be {fragment}, not '{value}'")
    assert snapshot(token) == before


@pytest.mark.parametrize(
    "name", ["w#1.bin", "a?x.bin", "p%41.bin", b"caf\xe9.bin"], ids=["hash", "query", "percent", "latin-1"]
)
def test_a_file_name_mlflow_cannot_store_as_it_is_stops_the_run_before_anything_changes(
    run_cli, make_token, make_model, snapshot, name
):
    import os

    token = make_token()
    model = make_model()
    with open(os.path.join(os.fsencode(model), os.fsencode(name)), "wb") as handle:
        handle.write(b"bytes the digest would have named, stored under another name")
    before = snapshot(token)
    result = register(run_cli, token, model)
    assert_one_clear_line(result, 2, "has a name MLflow cannot store as it is", "Rename it")
    assert snapshot(token) == before
