"""Settings: flag > environment > hokusai.yaml > defaults, validated once, secrets kept out of sight."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

import hokusai_action
from hokusai_action import redact as redact_module
from hokusai_action.errors import InputError
from hokusai_action.redact import redact
from hokusai_action.settings.loader import Settings, load_settings

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("fresh_secrets")]

SCHEMA_PATH = Path(hokusai_action.__file__).parent / "settings" / "schema" / "hokusai.schema.json"
DB_PASSWORD = "pg-Secret-4242"
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
# the git variable keeps load_settings from asking git about tmp_path
BASE_ENV = {"HOKUSAI_GIT_SHA": "0123456789abcdef0123456789abcdef01234567"}


@pytest.fixture
def load(tmp_path: Path) -> Callable[..., Settings]:
    """load_settings(flags, BASE_ENV + env, cwd=tmp_path), optionally with a hokusai.yaml there."""

    def run(flags: dict[str, Any] | None = None, env: dict[str, str] | None = None, yaml_text: str | None = None):
        if yaml_text is not None:
            (tmp_path / "hokusai.yaml").write_text(textwrap.dedent(yaml_text), encoding="utf-8")
        return load_settings(flags or {}, {**BASE_ENV, **(env or {})}, cwd=tmp_path)

    return run


def load_error(load: Callable[..., Settings], **kwargs: Any) -> str:
    with pytest.raises(InputError) as raised:
        load(**kwargs)
    assert raised.value.exit_code == 2
    return str(raised.value)


# --------------------------------------------------------------------------------------- layering

LAYERED = [
    # (setting, flag name, environment name, yaml text, flag value, env value, yaml value)
    (
        "mlflow_tracking_uri",
        "mlflow_tracking_uri",
        "MLFLOW_TRACKING_URI",
        "mlflow: {tracking_uri: http://from-yaml:5000}",
        "http://from-flag:5000",
        "http://from-env:5000",
        "http://from-yaml:5000",
    ),
    (
        "database_url",
        "database_url",
        "HOKUSAI_DATABASE_URL",
        "database: {url: 'postgresql://hokusai@yaml-host/hokusai'}",
        "postgresql://hokusai@flag-host/hokusai",
        "postgresql://hokusai@env-host/hokusai",
        "postgresql://hokusai@yaml-host/hokusai",
    ),
    (
        "event_sinks",
        "event_sinks",
        "HOKUSAI_EVENT_SINKS",
        "events: {sinks: [pubsub], pubsub: {topic: projects/p/topics/t}}",
        "database,pubsub",
        "pubsub,database",
        ("pubsub",),
    ),
    (
        "mlflow_timeout",
        "mlflow_timeout",
        "HOKUSAI_MLFLOW_TIMEOUT",
        "mlflow: {timeout: 7}",
        "5",
        "6",
        7.0,
    ),
    (
        "pubsub_topic",
        "pubsub_topic",
        "HOKUSAI_PUBSUB_TOPIC",
        "events: {pubsub: {topic: projects/p/topics/from-yaml}}",
        "projects/p/topics/from-flag",
        "projects/p/topics/from-env",
        "projects/p/topics/from-yaml",
    ),
    (
        "mlflow_experiment",
        "mlflow_experiment",
        "HOKUSAI_MLFLOW_EXPERIMENT",
        "mlflow: {experiment: from-yaml}",
        "from-flag",
        "from-env",
        "from-yaml",
    ),
]
EXPECTED_FROM = {
    "event_sinks": {"database,pubsub": ("database", "pubsub"), "pubsub,database": ("pubsub", "database")},
    "mlflow_timeout": {"5": 5.0, "6": 6.0},
}
# the pubsub sink needs a topic to validate
TOPIC_ENV = {"HOKUSAI_PUBSUB_TOPIC": "projects/p/topics/t"}


def _expected(setting: str, raw: Any) -> Any:
    return EXPECTED_FROM.get(setting, {}).get(raw, raw)


@pytest.mark.parametrize(("setting", "flag", "var", "yaml_text", "flag_value", "env_value", "yaml_value"), LAYERED)
def test_flag_beats_environment_beats_yaml(
    load, setting, flag, var, yaml_text, flag_value, env_value, yaml_value
) -> None:
    everything = load({flag: flag_value}, {var: env_value}, yaml_text)
    assert getattr(everything, setting) == _expected(setting, flag_value)
    env_and_yaml = load({}, {var: env_value})  # the hokusai.yaml written above is still there
    assert getattr(env_and_yaml, setting) == _expected(setting, env_value)
    yaml_only = load()
    assert getattr(yaml_only, setting) == _expected(setting, yaml_value)


def test_empty_flags_and_variables_do_not_hide_lower_layers(load) -> None:
    settings = load(
        {"mlflow_tracking_uri": "", "database_url": None},
        {"MLFLOW_TRACKING_URI": ""},
        "mlflow: {tracking_uri: http://from-yaml:5000}\n",
    )
    assert settings.mlflow_tracking_uri == "http://from-yaml:5000"


@pytest.mark.parametrize(
    ("setting", "var", "yaml_text", "env_value", "yaml_value", "default"),
    [
        ("database_timeout", "HOKUSAI_DATABASE_TIMEOUT", "database: {timeout: 3}", "4", 3.0, 10.0),
        ("pubsub_timeout", "HOKUSAI_PUBSUB_TIMEOUT", "events: {pubsub: {timeout: 3}}", "4", 3.0, 30.0),
        ("webhook_timeout", "HOKUSAI_WEBHOOK_TIMEOUT", "events: {webhook: {timeout: 3}}", "4", 3.0, 10.0),
        ("mlflow_timeout", "HOKUSAI_MLFLOW_TIMEOUT", "mlflow: {timeout: 3}", "4", 3.0, 30.0),
        ("upload_stall_timeout", "HOKUSAI_UPLOAD_STALL_TIMEOUT", "mlflow: {upload_stall_timeout: 3}", "4", 3.0, 60.0),
        ("upload_min_rate", "HOKUSAI_UPLOAD_MIN_RATE", "mlflow: {upload_min_rate: 3}", "4", 3.0, 10.0),
    ],
)
def test_timeouts_layer_environment_over_yaml_over_default(
    load, setting, var, yaml_text, env_value, yaml_value, default
) -> None:
    assert getattr(load(), setting) == default
    assert getattr(load(yaml_text=yaml_text), setting) == yaml_value
    assert getattr(load(env={var: env_value}), setting) == float(env_value)


def test_claim_ttl_comes_from_the_environment(load) -> None:
    assert load().claim_ttl == 300.0
    assert load(env={"HOKUSAI_CLAIM_TTL": "90"}).claim_ttl == 90.0


def test_relay_lease_comes_from_the_environment_and_is_at_least_a_second(load) -> None:
    assert load().relay_lease == 120.0
    assert load(env={"HOKUSAI_RELAY_LEASE": "2.5"}).relay_lease == 2.5
    assert load_error(load, env={"HOKUSAI_RELAY_LEASE": "0.2"}) == (
        "HOKUSAI_RELAY_LEASE must be at least 1 second(s), not '0.2': a relay renews it every quarter."
    )
    assert load_error(load, env={"HOKUSAI_RELAY_LEASE": "-1"}).startswith("HOKUSAI_RELAY_LEASE must be a positive")


@pytest.mark.parametrize("value", ["0", "-1", "abc", "inf", "nan"])
def test_a_bad_timeout_says_it_must_be_positive_seconds(load, value: str) -> None:
    message = load_error(load, env={"HOKUSAI_MLFLOW_TIMEOUT": value})
    assert message == f"HOKUSAI_MLFLOW_TIMEOUT must be a positive number of seconds, not '{value}'."


def test_a_bad_boolean_variable_is_named(load) -> None:
    message = load_error(load, env={"HOKUSAI_WEBHOOK_ALLOW_HTTP": "maybe"})
    assert message == "HOKUSAI_WEBHOOK_ALLOW_HTTP must be true or false, not 'maybe'."
    assert load(env={"HOKUSAI_WEBHOOK_ALLOW_HTTP": "yes"}).webhook_allow_http is True


def test_registration_fields_come_from_flags_over_yaml(load, tmp_path: Path) -> None:
    yaml_text = """\
        token_id: XRAY
        model_path: ./checkpoints/final
        metric: auroc
        baseline: 0.82
        metric_value: 0.9
        metrics_file: eval/metrics.json
        dry_run: true
    """
    settings = load(yaml_text=yaml_text)
    assert (settings.token_id, settings.metric, settings.baseline, settings.metric_value) == (
        "XRAY",
        "auroc",
        0.82,
        0.9,
    )
    assert settings.dry_run is True
    assert settings.config_path == tmp_path / "hokusai.yaml"
    flagged = load({"token_id": "YRAY", "metric": "f1", "baseline": "0.5", "dry_run": False})
    assert (flagged.token_id, flagged.metric, flagged.baseline) == ("YRAY", "f1", "0.5")
    assert flagged.dry_run is False


# --------------------------------------------------------------------------------------- defaults


def test_embedded_defaults_live_under_dot_hokusai_in_the_working_directory(load, tmp_path: Path) -> None:
    settings = load()
    home = tmp_path / ".hokusai"
    assert settings.home == home
    assert settings.mlflow_tracking_uri == f"sqlite:///{home.as_posix()}/mlflow.db"
    assert settings.database_url == f"sqlite:///{home.as_posix()}/hokusai.db"
    assert settings.uses_embedded_mlflow
    assert settings.event_sinks == ("database",)
    assert settings.mlflow_experiment == "hokusai"
    assert settings.event_source == "hokusai-ml-platform"
    assert settings.config_path is None


def test_embedded_defaults_follow_hokusai_home(load, tmp_path: Path) -> None:
    home = tmp_path / "elsewhere" / "state"
    settings = load(env={"HOKUSAI_HOME": str(home)})
    assert settings.home == home
    assert settings.mlflow_tracking_uri == f"sqlite:///{home.as_posix()}/mlflow.db"
    assert settings.database_url == f"sqlite:///{home.as_posix()}/hokusai.db"


def test_a_relative_hokusai_home_starts_at_the_working_directory(load, tmp_path: Path) -> None:
    settings = load(env={"HOKUSAI_HOME": "state"})
    assert settings.home == tmp_path / "state"
    assert settings.database_url == f"sqlite:///{(tmp_path / 'state').as_posix()}/hokusai.db"


def test_git_info_comes_from_ci_variables(load) -> None:
    settings = load(env={"GITHUB_REF": "refs/heads/main", "GITHUB_REPOSITORY": "hokusai/example"})
    assert settings.git.as_dict() == {
        "sha": BASE_ENV["HOKUSAI_GIT_SHA"],
        "ref": "refs/heads/main",
        "repository": "hokusai/example",
    }


# ----------------------------------------------------------------------------------- hokusai.yaml


def test_relative_paths_in_yaml_resolve_against_the_yaml_folder(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "hokusai.yaml").write_text("model_path: ./checkpoints/final\nmetrics_file: eval/m.json\n")
    settings = load_settings({"config": "project/hokusai.yaml"}, BASE_ENV, cwd=tmp_path)
    assert Path(settings.model_path) == project / "checkpoints" / "final"
    assert Path(settings.metrics_file) == project / "eval" / "m.json"
    assert settings.config_path == project / "hokusai.yaml"


def test_absolute_paths_in_yaml_are_kept(load, tmp_path: Path) -> None:
    settings = load(yaml_text=f"model_path: {tmp_path / 'abs' / 'model'}\n")
    assert settings.model_path == str(tmp_path / "abs" / "model")


def test_a_model_path_flag_is_not_rebased_on_the_yaml_folder(load) -> None:
    settings = load({"model_path": "./from-flag"}, yaml_text="model_path: ./from-yaml\n")
    assert settings.model_path == "./from-flag"


def test_a_config_flag_naming_a_missing_file_is_an_error(load, tmp_path: Path) -> None:
    message = load_error(load, flags={"config": "missing.yaml"})
    assert message == (
        f"Config file {tmp_path / 'missing.yaml'} does not exist. Fix --config, "
        "or leave it out to use ./hokusai.yaml when present."
    )


# DESIGN.md's hokusai.yaml
DESIGN_EXAMPLE_YAML = """\
token_id: XRAY
model_path: ./checkpoints/final
metric: auroc
baseline: 0.82
mlflow:   {tracking_uri: https://mlflow.example.com, experiment: hokusai}
database: {url_env: HOKUSAI_DATABASE_URL}
events:
  sinks: [pubsub, database]
  pubsub:  {topic: projects/hokusai/topics/token-events}
  webhook: {url: https://hooks.example.com/hokusai, secret_env: HOKUSAI_WEBHOOK_SECRET}
"""


def test_the_design_example_yaml_loads(load, tmp_path: Path) -> None:
    yaml_text = DESIGN_EXAMPLE_YAML
    env = {
        "HOKUSAI_DATABASE_URL": "postgresql://hokusai@db/hokusai",
        "HOKUSAI_WEBHOOK_SECRET": WEBHOOK_SECRET,
    }
    settings = load(env=env, yaml_text=yaml_text)
    assert settings.event_sinks == ("pubsub", "database")
    assert settings.pubsub_topic == "projects/hokusai/topics/token-events"
    assert settings.mlflow_tracking_uri == "https://mlflow.example.com"
    assert settings.webhook_secret == WEBHOOK_SECRET
    assert settings.database_url == "postgresql://hokusai@db/hokusai"


def test_database_url_env_names_the_variable_that_holds_the_url(load) -> None:
    settings = load(
        env={"SITE_DB_URL": f"postgresql://hokusai:{DB_PASSWORD}@db/hokusai"},
        yaml_text="database: {url_env: SITE_DB_URL}\n",
    )
    assert settings.database_url == f"postgresql://hokusai:{DB_PASSWORD}@db/hokusai"
    assert DB_PASSWORD not in redact(f"could not connect to {settings.database_url}")


def test_database_url_env_naming_an_unset_variable_is_an_error(load) -> None:
    message = load_error(load, yaml_text="database: {url_env: SITE_DB_URL}\n")
    assert message == "database.url_env names the environment variable SITE_DB_URL, but it is not set."


def test_webhook_secret_env_naming_an_unset_variable_is_an_error(load) -> None:
    message = load_error(
        load,
        yaml_text="events: {sinks: [webhook], webhook: {url: 'https://hooks.example.com/h', secret_env: HOOK_KEY}}\n",
    )
    assert message == "events.webhook.secret_env names the environment variable HOOK_KEY, but it is not set."


def test_webhook_secret_env_unset_is_fine_while_webhook_is_not_a_sink(load) -> None:
    settings = load(yaml_text="events: {webhook: {url: 'https://hooks.example.com/h', secret_env: HOOK_KEY}}\n")
    assert settings.event_sinks == ("database",)
    assert settings.webhook_secret is None


def test_webhook_secret_env_is_read(load) -> None:
    settings = load(
        env={"HOOK_KEY": WEBHOOK_SECRET},
        yaml_text="events: {webhook: {url: 'https://hooks.example.com/h', secret_env: HOOK_KEY}}\n",
    )
    assert settings.webhook_secret == WEBHOOK_SECRET


def test_unknown_key_names_the_key_and_its_line(load, tmp_path: Path) -> None:
    message = load_error(load, yaml_text="token_id: XRAY\nmetric: auroc\nbasline: 0.82\n")
    assert message.startswith(f"{tmp_path / 'hokusai.yaml'}:3: unknown key 'basline'. Allowed here: ")
    assert "baseline" in message and "model_path" in message


def test_unknown_nested_key_names_its_dotted_path_and_line(load, tmp_path: Path) -> None:
    message = load_error(load, yaml_text="token_id: XRAY\nmlflow:\n  experiment: x\n  tracking_url: http://m\n")
    assert message == (
        f"{tmp_path / 'hokusai.yaml'}:4: unknown key 'mlflow.tracking_url'. "
        "Allowed here: experiment, timeout, tracking_uri, upload_min_rate, upload_stall_timeout."
    )


@pytest.mark.parametrize(
    ("yaml_text", "line", "key", "problem"),
    [
        ("token_id: XRAY\nbaseline: high\n", 2, "baseline", "must be a number, not str ('high')"),
        ("metric: auroc\ndry_run: sometimes\n", 2, "dry_run", "must be a boolean, not str ('sometimes')"),
        ("mlflow:\n  timeout: soon\n", 2, "mlflow.timeout", "must be a number, not str ('soon')"),
        (
            "events:\n  sinks: [database, kafka]\n",
            2,
            "events.sinks",
            "must be one of pubsub, webhook, database, not 'kafka'",
        ),
        (
            "token_id: 'bad id!'\n",
            1,
            "token_id",
            "'bad id!' does not match the expected form ^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$",
        ),
    ],
)
def test_wrong_type_names_the_key_and_its_line(load, tmp_path: Path, yaml_text, line, key, problem) -> None:
    message = load_error(load, yaml_text=yaml_text)
    assert message == f"{tmp_path / 'hokusai.yaml'}:{line}: '{key}' {problem}."


def test_a_yaml_that_is_not_a_mapping_is_refused(load, tmp_path: Path) -> None:
    message = load_error(load, yaml_text="- token_id\n- XRAY\n")
    assert message == (f"{tmp_path / 'hokusai.yaml'} must be a YAML mapping of settings (docs/reference/settings.md).")


def test_invalid_yaml_says_where(load, tmp_path: Path) -> None:
    message = load_error(load, yaml_text="token_id: [XRAY\n")
    assert message.startswith(f"Cannot read config file {tmp_path / 'hokusai.yaml'}: invalid YAML: ")


def test_an_empty_yaml_is_all_defaults(load) -> None:
    assert load(yaml_text="").event_sinks == ("database",)


# ----------------------------------------------------------------------------------- inline secrets


@pytest.mark.parametrize(
    ("yaml_text", "line", "key", "secret"),
    [
        (
            "token_id: XRAY\nevents:\n  webhook:\n    url: https://hooks.example.com/h\n"
            f"    secret: {WEBHOOK_SECRET}\n",
            5,
            "events.webhook.secret",
            WEBHOOK_SECRET,
        ),
        (
            f"database:\n  url: postgresql://hokusai:{DB_PASSWORD}@db.example.com/hokusai\n",
            2,
            "database.url",
            DB_PASSWORD,
        ),
        (
            f"mlflow: {{tracking_uri: 'https://ci-bot:{DB_PASSWORD}@mlflow.example.com'}}\n",
            1,
            "mlflow.tracking_uri",
            DB_PASSWORD,
        ),
        (
            f"events:\n  webhook:\n    url: https://bot:{DB_PASSWORD}@hooks.example.com/h\n",
            3,
            "events.webhook.url",
            DB_PASSWORD,
        ),
        (f"database:\n  password: {DB_PASSWORD}\n", 2, "database.password", DB_PASSWORD),
    ],
)
def test_an_inline_secret_is_an_error_that_does_not_echo_it(load, tmp_path, yaml_text, line, key, secret) -> None:
    message = load_error(load, yaml_text=yaml_text)
    assert message.startswith(
        f"{tmp_path / 'hokusai.yaml'}:{line}: '{key}' writes a secret into hokusai.yaml. "
        "Secrets come only from the environment or action inputs: "
    )
    assert secret not in message


def test_the_inline_secret_error_says_what_to_do_instead(load) -> None:
    message = load_error(load, yaml_text=f"database: {{url: 'postgresql://u:{DB_PASSWORD}@h/db'}}\n")
    assert message.endswith("use 'database: {url_env: HOKUSAI_DATABASE_URL}' and set that variable.")


def test_a_database_url_without_password_is_allowed_in_yaml(load) -> None:
    assert load(yaml_text="database: {url: 'sqlite:///site.db'}\n").database_url == "sqlite:///site.db"


def test_a_wrong_type_error_quoting_a_url_hides_its_password_once_redacted(load, tmp_path: Path) -> None:
    # the user wrote the URL where the section belongs; the CLI prints redact(message)
    message = load_error(load, yaml_text=f"database: 'postgresql://u:{DB_PASSWORD}@h/db'\n")
    assert message.startswith(f"{tmp_path / 'hokusai.yaml'}:1: 'database' must be a")
    assert DB_PASSWORD not in redact(message)


@pytest.mark.parametrize(
    "secret",
    [
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",  # matches the variable-name pattern: 'not set' error
        "whsec_MfKQ9r8GKYqrTwjU+D8ILPZIo2La/aSw=",  # does not: the schema's pattern error quotes it
    ],
)
def test_a_secret_pasted_where_a_variable_name_belongs_is_not_echoed(load, secret: str) -> None:
    message = load_error(
        load,
        yaml_text=f"events: {{webhook: {{url: 'https://hooks.example.com/h', secret_env: '{secret}'}}}}\n",
    )
    assert secret not in redact(message)


# -------------------------------------------------------------------------------------------- sinks


def test_sinks_are_a_comma_list_deduplicated_in_order(load) -> None:
    settings = load(env={"HOKUSAI_EVENT_SINKS": " Database , pubsub,database,", **TOPIC_ENV})
    assert settings.event_sinks == ("database", "pubsub")


def test_unknown_sink_name_is_an_error_that_lists_the_known_ones(load) -> None:
    message = load_error(load, env={"HOKUSAI_EVENT_SINKS": "database,kafka"})
    assert message == "Unknown event sink 'kafka' in event sinks. Choose any of: pubsub, webhook, database."


def test_pubsub_sink_without_topic_is_an_error(load) -> None:
    message = load_error(load, env={"HOKUSAI_EVENT_SINKS": "pubsub"})
    assert message == "Event sink 'pubsub' needs a topic: set HOKUSAI_PUBSUB_TOPIC=projects/P/topics/T."


def test_webhook_sink_without_url_is_an_error(load) -> None:
    message = load_error(load, env={"HOKUSAI_EVENT_SINKS": "webhook", "HOKUSAI_WEBHOOK_SECRET": WEBHOOK_SECRET})
    assert message == "Event sink 'webhook' needs a URL: set HOKUSAI_WEBHOOK_URL."


def test_webhook_sink_without_secret_is_an_error(load) -> None:
    message = load_error(
        load, env={"HOKUSAI_EVENT_SINKS": "webhook", "HOKUSAI_WEBHOOK_URL": "https://hooks.example.com/h"}
    )
    assert message == "Event sink 'webhook' needs a signing secret: set HOKUSAI_WEBHOOK_SECRET=whsec_...."


def test_webhook_sink_with_url_and_secret_loads(load) -> None:
    settings = load(
        env={
            "HOKUSAI_EVENT_SINKS": "webhook,database",
            "HOKUSAI_WEBHOOK_URL": "https://hooks.example.com/h",
            "HOKUSAI_WEBHOOK_SECRET": WEBHOOK_SECRET,
        }
    )
    assert settings.event_sinks == ("webhook", "database")
    assert (settings.webhook_url, settings.webhook_secret) == ("https://hooks.example.com/h", WEBHOOK_SECRET)


# ------------------------------------------------------------------------------------------ secrets

SECRET_ENV = {
    "HOKUSAI_DATABASE_URL": f"postgresql+psycopg2://hokusai:{DB_PASSWORD}@db.example.com:5432/hokusai",
    "HOKUSAI_EVENT_SINKS": "webhook,database",
    "HOKUSAI_WEBHOOK_URL": "https://hooks.example.com/hokusai",
    "HOKUSAI_WEBHOOK_SECRET": WEBHOOK_SECRET,
}


def test_repr_never_shows_the_database_password_or_webhook_secret(load) -> None:
    settings = load(env=SECRET_ENV)
    for shown in (repr(settings), str(settings), f"{settings!r}"):
        assert DB_PASSWORD not in shown
        assert WEBHOOK_SECRET not in shown
    assert "database_url='***'" in repr(settings)
    assert "webhook_secret='***'" in repr(settings)


def test_repr_of_secrets_from_flags_is_masked_too(load) -> None:
    settings = load(
        {
            "database_url": f"postgresql://hokusai:{DB_PASSWORD}@db/hokusai",
            "webhook_secret": WEBHOOK_SECRET,
            "webhook_url": "https://hooks.example.com/h",
            "event_sinks": "webhook",
        }
    )
    assert DB_PASSWORD not in repr(settings)
    assert WEBHOOK_SECRET not in repr(settings)


def test_repr_never_shows_the_mlflow_tracking_uri_password(load) -> None:
    settings = load(env={"MLFLOW_TRACKING_URI": f"https://ci-bot:{DB_PASSWORD}@mlflow.example.com"})
    assert DB_PASSWORD not in repr(settings)


def test_after_loading_redact_masks_the_database_password_and_webhook_secret(load) -> None:
    settings = load(env=SECRET_ENV)
    line = (
        f"password authentication failed for {DB_PASSWORD!r}; signing with {WEBHOOK_SECRET} for {settings.webhook_url}"
    )
    scrubbed = redact(line)
    assert DB_PASSWORD not in scrubbed
    assert WEBHOOK_SECRET not in scrubbed
    assert scrubbed == (
        "password authentication failed for '***'; signing with *** for https://hooks.example.com/hokusai"
    )
    assert settings.database_url_display == "postgresql+psycopg2://hokusai:***@db.example.com:5432/hokusai"


def test_after_loading_redact_masks_mlflow_secrets_from_the_environment(load) -> None:
    token = "dapi-0123456789abcdef"
    load(
        env={
            "MLFLOW_TRACKING_TOKEN": token,
            "MLFLOW_TRACKING_URI": f"https://bot:{DB_PASSWORD}@mlflow.example.com",
        }
    )
    assert redact(f"Authorization: Bearer {token}") == "Authorization: Bearer ***"
    assert DB_PASSWORD not in redact(f"401 for user bot with password {DB_PASSWORD}")


# A secret with a control character in it (most often a trailing newline, from a file or `echo`) is
# refused before any request: requests refused it only when sending, quoting it in its error, and
# the registration then waited out an "outage" for the MLflow timeout.
CONTROL_TOKEN = "dapi-0123456789abcdef"


@pytest.mark.parametrize(
    ("flags", "env", "name", "where"),
    [
        ({}, {"MLFLOW_TRACKING_TOKEN": CONTROL_TOKEN + "\n"}, "MLFLOW_TRACKING_TOKEN", "ends with"),
        ({}, {"MLFLOW_TRACKING_TOKEN": CONTROL_TOKEN + "\r\n"}, "MLFLOW_TRACKING_TOKEN", "ends with"),
        ({}, {"MLFLOW_TRACKING_PASSWORD": "\t" + CONTROL_TOKEN}, "MLFLOW_TRACKING_PASSWORD", "starts with"),
        (
            {},
            {"MLFLOW_TRACKING_USERNAME": "bot\x00", "MLFLOW_TRACKING_PASSWORD": CONTROL_TOKEN},
            "MLFLOW_TRACKING_USERNAME",
            "ends with",
        ),
        ({}, {**SECRET_ENV, "HOKUSAI_WEBHOOK_SECRET": WEBHOOK_SECRET + "\n"}, "HOKUSAI_WEBHOOK_SECRET", "ends with"),
        ({}, {"SIGSTORE_ID_TOKEN": "eyJ\x1b[2J" + CONTROL_TOKEN}, "SIGSTORE_ID_TOKEN", "contains"),
        ({}, {"ACTIONS_ID_TOKEN_REQUEST_TOKEN": CONTROL_TOKEN + "\x7f"}, "ACTIONS_ID_TOKEN_REQUEST_TOKEN", "ends with"),
        (
            {},
            {"HOKUSAI_SIGNING_KEY": "-----BEGIN PRIVATE KEY-----\nAB\x0cCD\n-----END PRIVATE KEY-----\n"},
            "HOKUSAI_SIGNING_KEY",
            "contains",
        ),
        (
            {},
            {"HOKUSAI_DATABASE_URL": f"postgresql://hokusai:{CONTROL_TOKEN}%0A@db/site"},
            "The password in HOKUSAI_DATABASE_URL",
            "ends with",
        ),
        (
            {},
            {"MLFLOW_TRACKING_URI": f"https://bot:{CONTROL_TOKEN}\n@mlflow.example.com"},
            "MLFLOW_TRACKING_URI",
            "contains",
        ),
        (
            {"mlflow_tracking_token": CONTROL_TOKEN + "\u2028"},
            {},
            "The action input mlflow-tracking-token",
            "ends with",
        ),
        (
            {"database_url": f"postgresql://hokusai:{CONTROL_TOKEN}%09@db/site"},
            {},
            "The password in --database-url (action input database-url)",
            "ends with",
        ),
    ],
    ids=[
        "token-newline",
        "token-crlf",
        "password-tab",
        "username-nul",
        "webhook-secret",
        "sigstore-escape",
        "oidc-del",
        "signing-key-formfeed",
        "database-url-password",
        "tracking-uri",
        "token-input",
        "database-url-flag",
    ],
)
def test_a_secret_with_a_control_character_is_named_and_never_shown(load, flags, env, name, where) -> None:
    message = load_error(load, flags=flags, env=env)
    assert message.startswith(f"{name} {where} a control character")
    assert CONTROL_TOKEN not in message and "\n" not in message
    assert WEBHOOK_SECRET not in message


def test_a_secret_from_a_variable_hokusai_yaml_names_is_checked_under_that_name(load) -> None:
    env = {**SECRET_ENV, "HOKUSAI_WEBHOOK_SECRET": "", "DEPLOY_HOOK_SECRET": WEBHOOK_SECRET + "\n"}
    message = load_error(load, env=env, yaml_text="events: {webhook: {secret_env: DEPLOY_HOOK_SECRET}}\n")
    assert message.startswith("DEPLOY_HOOK_SECRET ends with a control character")


def test_a_signing_key_keeps_its_line_breaks_and_spaces_in_secrets_are_kept(load) -> None:
    pem = (
        "-----BEGIN PRIVATE KEY-----\r\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\r\n-----END PRIVATE KEY-----\n"
    )
    settings = load(env={"HOKUSAI_SIGNING_KEY": pem, "MLFLOW_TRACKING_PASSWORD": "two words"})
    assert settings.signing_key_pem == pem


def test_basic_credentials_from_the_environment_are_masked_in_base64(load) -> None:
    import base64

    load(env={"MLFLOW_TRACKING_USERNAME": "ci-bot", "MLFLOW_TRACKING_PASSWORD": DB_PASSWORD})
    header = "Basic " + base64.b64encode(f"ci-bot:{DB_PASSWORD}".encode()).decode()
    assert redact(f"proxy echoed Authorization: {header}") == "proxy echoed Authorization: Basic ***"


def test_loading_without_secrets_registers_nothing(load) -> None:
    load()
    assert redact_module.registered_secrets() == frozenset()


# ------------------------------------------------------------------------------------------ schema


def test_the_json_schema_is_a_valid_draft_2020_12_schema() -> None:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_the_schema_accepts_the_design_example_and_refuses_an_unknown_key() -> None:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    example = yaml.safe_load(DESIGN_EXAMPLE_YAML)
    assert list(validator.iter_errors(example)) == []
    assert not validator.is_valid({**example, "basline": 0.8})


def test_every_setting_in_the_schema_is_a_cli_option_or_documented_section() -> None:
    # top-level keys mirror `model register` options in snake_case (DESIGN.md, hokusai.yaml)
    from hokusai_action.cli.model import register_command

    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    options = {param.name for param in register_command.params}
    sections = {"mlflow", "database", "events", "signing"}
    assert set(schema["properties"]) - sections <= options
    assert sections <= set(schema["properties"])


def test_the_schema_offers_the_sign_methods_and_sinks_the_settings_accept() -> None:
    from hokusai_action.settings.parsers import EVENT_SINKS
    from hokusai_action.settings.table import SIGN_METHODS

    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    events, signing = schema["properties"]["events"], schema["properties"]["signing"]
    assert tuple(events["properties"]["sinks"]["items"]["enum"]) == EVENT_SINKS
    assert tuple(signing["properties"]["method"]["enum"]) == SIGN_METHODS


# ---------------------------------------------------------------------------- aliases (MLflow's rules)

RESERVED_ALIASES = ["latest", "LATEST", "Latest", "v3", "V3", "v0", "v12345"]
BAD_ALIAS_NAMES = ["champ ion", "champion\n", "prod/eu", "a.b", "x" * 256, "\u00a0"]
GOOD_ALIASES = ["champion", "v3a", "va", "latest-1", "my_latest", "x" * 255, "V3_rc", "pr\u00e9f\u00e9r\u00e9", "-"]


@pytest.mark.parametrize("alias", RESERVED_ALIASES)
def test_a_reserved_set_alias_is_refused(load, alias: str) -> None:
    message = load_error(load, flags={"set_alias": alias})
    assert message.startswith(f"--set-alias '{alias}' is reserved by MLflow")
    assert "choose another name" in message


@pytest.mark.parametrize("alias", BAD_ALIAS_NAMES)
@pytest.mark.parametrize("key", ["set_alias", "compare_to"])
def test_an_alias_mlflow_cannot_store_is_refused(load, key: str, alias: str) -> None:
    message = load_error(load, flags={key: alias})
    flag = "--" + key.replace("_", "-")
    assert message.startswith(f"{flag} {alias!r} is not a valid MLflow alias")
    assert "\n" not in message


@pytest.mark.parametrize("alias", GOOD_ALIASES)
def test_aliases_mlflow_accepts_load(load, alias: str) -> None:
    settings = load(flags={"set_alias": alias, "compare_to": alias})
    assert (settings.set_alias, settings.compare_to) == (alias, alias)


def test_compare_to_latest_is_mlflows_newest_version_and_allowed(load) -> None:
    assert load(flags={"compare_to": "latest"}).compare_to == "latest"


@pytest.mark.parametrize("alias", ["v7", "V7", "v0", "v12345"])
def test_compare_to_a_version_name_is_refused(load, alias: str) -> None:
    # no alias can be called v<number>: MLflow would find none, and the baseline alone would decide
    message = load_error(load, flags={"compare_to": alias})
    assert message.startswith(f"--compare-to '{alias}' is reserved by MLflow")
    assert "set an alias" in message and "'latest'" in message


@pytest.mark.parametrize(
    ("yaml_text", "line", "fragment"),
    [
        ("token_id: XRAY\nset_alias: latest\n", 2, "'set_alias' 'latest' is reserved by MLflow"),
        ("token_id: XRAY\nset_alias: V7\n", 2, "'set_alias' 'V7' is reserved by MLflow"),
        ("compare_to: 'a b'\n", 1, "'compare_to' 'a b' is not a valid MLflow alias"),
        ('set_alias: "champion\\n"\n', 1, "'set_alias' 'champion\\n' is not a valid MLflow alias"),
    ],
)
def test_an_alias_in_hokusai_yaml_is_checked_with_its_line(load, tmp_path, yaml_text, line, fragment) -> None:
    message = load_error(load, yaml_text=yaml_text)
    assert message.startswith(f"{tmp_path / 'hokusai.yaml'}:{line}: {fragment}"), message


def test_the_schema_refuses_reserved_set_aliases_and_allows_compare_to_latest() -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    assert not validator.is_valid({"set_alias": "latest"})
    assert not validator.is_valid({"set_alias": "v3"})
    assert validator.is_valid({"set_alias": "champion", "compare_to": "latest"})
    assert not validator.is_valid({"compare_to": "v7"})


@pytest.mark.slow  # imports the full MLflow
def test_the_alias_rule_matches_mlflows_own_validation() -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.utils import validation as mlflow_validation

    from hokusai_action.settings.aliases import alias_problem

    for alias in [*RESERVED_ALIASES, *BAD_ALIAS_NAMES, *GOOD_ALIASES]:
        try:
            mlflow_validation._validate_model_alias_name(alias)
            mlflow_validation._validate_model_alias_name_reserved(alias)
            mlflow_ok = "\n" not in alias  # MLflow's re.match(...$) lets one trailing newline through
        except MlflowException:
            mlflow_ok = False
        assert (alias_problem(alias, setting=True) is None) == mlflow_ok, alias


# ------------------------------------------------------------------- full matches (no trailing newline)


@pytest.mark.parametrize("token_id", ["XRAY\n", "XRAY\r\n", "\nXRAY"])
def test_a_token_id_with_a_newline_is_refused_in_hokusai_yaml(load, token_id: str) -> None:
    message = load_error(load, yaml_text=f"token_id: {json.dumps(token_id)}\n")
    assert "'token_id'" in message and "does not match the expected form" in message


def test_an_env_var_name_with_a_trailing_newline_is_refused(load) -> None:
    message = load_error(load, yaml_text='database: {url_env: "DB_URL\\n"}\n', env={"DB_URL\n": "sqlite://"})
    assert "'database.url_env' must be an environment variable name" in message


# --------------------------------------------------------------------------- bounded hokusai.yaml

BILLION_LAUGHS = textwrap.dedent(
    """\
    a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
    b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
    c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
    d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
    e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
    f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
    g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
    h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
    i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
    """
)
# the same shape with mappings: the line map used to walk every expanded key
BILLION_LAUGHS_MAPPINGS = "".join(
    f"k{n}: &k{n} {{" + ", ".join(f"x{m}: {'*k' + str(n - 1) if n else 1}" for m in range(9)) + "}\n" for n in range(9)
)


@pytest.mark.parametrize("text", [BILLION_LAUGHS, BILLION_LAUGHS_MAPPINGS], ids=["sequences", "mappings"])
def test_a_billion_laughs_hokusai_yaml_is_refused_fast_and_small(load, tmp_path, text: str) -> None:
    import time
    import tracemalloc

    (tmp_path / "hokusai.yaml").write_text(text, encoding="utf-8")
    tracemalloc.start()
    started = time.monotonic()
    try:
        message = load_error(load)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    elapsed = time.monotonic() - started
    assert message.startswith(f"Cannot read config file {tmp_path / 'hokusai.yaml'}: its anchors and aliases")
    assert peak < 5 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"
    assert elapsed < 2, f"{elapsed:.2f} s"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("a: " + "[" * 5000 + "]" * 5000 + "\n", "nested more than 64 levels deep"),
        ("a: " + "[" * 70 + "]" * 70 + "\n", "nested more than 64 levels deep"),
        ("a: &a [*a]\n", "an alias refers to the node that contains it"),
        ("a: &a {b: *a}\n", "an alias refers to the node that contains it"),
        ("token_id: XRAY\n" + "# padding\n" * 120_000, "larger than 1024 KiB"),
        ("mlflow: {timeout: " + "9" * 5000 + "}\n", "invalid YAML: "),
    ],
    ids=["deep", "just-too-deep", "recursive-sequence", "recursive-mapping", "too-large", "huge-integer"],
)
def test_a_hokusai_yaml_past_the_bounds_is_refused_with_the_reason(load, tmp_path, text: str, reason: str) -> None:
    (tmp_path / "hokusai.yaml").write_text(text, encoding="utf-8")
    message = load_error(load)
    assert message.startswith(f"Cannot read config file {tmp_path / 'hokusai.yaml'}: {reason}"), message


def test_a_few_aliases_still_load_and_errors_keep_their_lines(load, tmp_path) -> None:
    text = "token_id: XRAY\nevents:\n  sinks: &s [database]\nmlflow:\n  experiment: x\n  timeout: &t 5\n"
    assert load(yaml_text=text).mlflow_timeout == 5
    message = load_error(load, yaml_text=text + "database:\n  timeout: *t\n  tls: *s\n")
    assert message.startswith(f"{tmp_path / 'hokusai.yaml'}:9: unknown key 'database.tls'")


@pytest.mark.parametrize(
    ("yaml_text", "key"),
    [
        ("mlflow: {timeout: " + "9" * 400 + "}\n", "HOKUSAI_MLFLOW_TIMEOUT"),
        ("events: {webhook: {timeout: " + "9" * 400 + "}}\n", "HOKUSAI_WEBHOOK_TIMEOUT"),
    ],
)
def test_a_timeout_too_big_for_a_float_is_a_clear_error(load, yaml_text: str, key: str) -> None:
    assert load_error(load, yaml_text=yaml_text).startswith(f"{key} must be a positive number of seconds")


@pytest.mark.parametrize("key", ["model_path", "metrics_file", "predictions"])
def test_a_path_with_a_nul_character_is_refused(load, key: str) -> None:
    message = load_error(load, yaml_text=f'{key}: "model\\0.bin"\n')
    assert f"'{key}'" in message and "NUL" in message


def test_a_control_character_in_hokusai_yaml_is_invalid_yaml(load, tmp_path) -> None:
    message = load_error(load, yaml_text="\x1f")  # found by tests/unit/test_fuzz.py
    assert message.startswith(f"Cannot read config file {tmp_path / 'hokusai.yaml'}: invalid YAML: unacceptable")


@pytest.mark.parametrize("text", ["token_id: !!timestamp 2001-12-14x\n", "dry_run: !!bool maybe\n"])
def test_a_value_its_explicit_tag_cannot_hold_is_invalid_yaml(load, tmp_path, text: str) -> None:
    message = load_error(load, yaml_text=text)  # found by tests/unit/test_fuzz.py
    assert message.startswith(f"Cannot read config file {tmp_path / 'hokusai.yaml'}: invalid YAML: "), message


@pytest.mark.parametrize("uri", ["http://[::1", "http://mlflow:notaport", "https://[fe80::1/x"])
def test_a_tracking_uri_that_does_not_parse_is_a_settings_error(load, uri: str) -> None:
    # found by tests/unit/test_fuzz.py: MLflow raised a raw ValueError at its first request
    message = load_error(load, flags={"mlflow_tracking_uri": uri})
    assert message.startswith(f"MLflow tracking URI '{uri}' does not parse (")


def test_a_long_wrong_value_is_quoted_short_and_a_union_type_reads_well(load, tmp_path) -> None:
    message = load_error(load, yaml_text=f"token_id: {list(range(500))}\n")
    assert message.startswith(f"{tmp_path / 'hokusai.yaml'}:1: 'token_id' must be a string, not list ([0, 1, 2, ")
    assert len(message) < 250
    message = load_error(load, yaml_text="min_improvement: [1]\n")
    assert "'min_improvement' must be a string or number, not list ([1])" in message


def test_a_config_flag_with_a_nul_character_is_refused_before_it_is_opened(load) -> None:
    assert load_error(load, flags={"config": "hokusai\0.yaml"}).startswith("'config' contains a NUL character")


@pytest.mark.parametrize(
    ("variable", "value", "accepted"),
    [
        ("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "inf", "a number of seconds from 0 to 3600"),
        ("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "nan", "a number of seconds from 0 to 3600"),
        ("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "-1", "a number of seconds from 0 to 3600"),
        ("MLFLOW_HTTP_REQUEST_TIMEOUT", "0", "a whole number of seconds from 1 to 1000000"),
        ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "-1", "a whole number from 0 to 10"),
    ],
)
def test_an_mlflow_http_variable_out_of_range_is_named(load, variable: str, value: str, accepted: str) -> None:
    message = load_error(load, env={variable: value})
    assert message.startswith(f"{variable} must be {accepted}, not '{value}'.")


def test_mlflow_http_variables_inside_mlflows_limits_are_accepted(load) -> None:
    load(
        env={
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "120",
            "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.25",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": "1",
        }
    )
    # MLflow's private limits raise its bounds, and ours follow
    load(env={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "20", "_MLFLOW_HTTP_REQUEST_MAX_RETRIES_LIMIT": "25"})


@pytest.mark.parametrize(
    ("variable", "value", "accepted"),
    [
        ("MLFLOW_HTTP_RESPECT_RETRY_AFTER_HEADER", "yes", "true or false (or 1 or 0)"),
        ("MLFLOW_TRACKING_INSECURE_TLS", "yes", "true or false (or 1 or 0)"),
        ("MLFLOW_HTTP_TCP_KEEPALIVE", "on", "true or false (or 1 or 0)"),
        ("MLFLOW_HTTP_TCP_KEEPALIVE_IDLE", "30s", "a whole number of seconds from 1 to 86400"),
        ("MLFLOW_HTTP_TCP_KEEPALIVE_INTERVAL", "0", "a whole number of seconds from 1 to 86400"),
        ("MLFLOW_HTTP_TCP_KEEPALIVE_COUNT", "x", "a whole number from 1 to 100"),
        ("MLFLOW_HTTP_REQUEST_TIMEOUT", "10000000000", "a whole number of seconds from 1 to 1000000"),
        ("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "1e300", "a number of seconds from 0 to 3600"),
        ("_MLFLOW_HTTP_REQUEST_MAX_RETRIES_LIMIT", "abc", "a whole number, 0 or more"),
        ("_MLFLOW_HTTP_REQUEST_MAX_BACKOFF_FACTOR_LIMIT", "-1", "a whole number, 0 or more"),
    ],
)
def test_every_mlflow_http_variable_the_upload_reads_is_checked_as_mlflow_parses_it(
    load, variable: str, value: str, accepted: str
) -> None:
    message = load_error(load, env={variable: value})
    assert message.startswith(f"{variable} must be {accepted}, not '{value}'.")


def test_a_lowered_mlflow_retry_limit_below_the_tools_default_says_what_to_set(load) -> None:
    """The tool bounds MLflow's retries at 3 unless MLFLOW_HTTP_REQUEST_MAX_RETRIES is set; MLflow refuses
    any value past its limit, so a limit of 2 needs the variable set (it was exit 4 after a run began)."""
    message = load_error(load, env={"_MLFLOW_HTTP_REQUEST_MAX_RETRIES_LIMIT": "2"})
    assert message.startswith(
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES must be a whole number from 0 to 2, not '3' (the tool's default), "
        "under the limit you set: set MLFLOW_HTTP_REQUEST_MAX_RETRIES within it."
    )
    load(env={"_MLFLOW_HTTP_REQUEST_MAX_RETRIES_LIMIT": "2", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2"})
    load(env={"MLFLOW_HTTP_RESPECT_RETRY_AFTER_HEADER": "FALSE", "MLFLOW_TRACKING_INSECURE_TLS": "1"})
