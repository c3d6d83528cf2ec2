"""Every setting, declared once: the ways it can be given (its `model register` flag, action input,
environment variable and ``hokusai.yaml`` keys), its default and its parser.

``settings.load_settings`` layers them (flag / action input > environment > ``hokusai.yaml`` >
default) row by row; a row with ``built_by`` is built by that module of ``settings`` instead, where
layering alone cannot say it: a secret, the signing key material, provenance, where things live.
``hokusai_action.action`` maps the action's inputs through it, and the settings reference is generated from it;
tests/unit/repository/test_docs.py checks it against ``load_settings`` itself (each way in really sets that
setting), the click app, ``action.yml``, the JSON Schema of ``hokusai.yaml`` and ``environment.ALL``
(nothing left out), so it cannot drift. Pure data: importing it costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hokusai_action.settings import environment as env
from hokusai_action.settings import parsers
from hokusai_action.settings.environment import EnvVar

SIGN_METHODS = ("none", "key", "certificate", "sigstore")
# defaults that an adapter also starts from when it is built without settings
DEFAULT_RELAY_LEASE = 120.0  # seconds a relay's lease on a delivery lasts without renewal
DEFAULT_UPLOAD_STALL_SECONDS = 60.0  # how long a healthy MLflow or store may go silent during an upload
DEFAULT_UPLOAD_MIN_RATE_MIB_S = 10.0  # the slowest MiB/s a healthy store takes an upload at


@dataclass(frozen=True)
class Setting:
    key: str | None  # the Settings attribute it sets (dotted for a nested one); None: read by MLflow or Google
    flag: str | None = None  # option of `hokusai-ml-platform model register`
    input: str | None = None  # input of the GitHub Action (action.yml)
    env: EnvVar | None = None
    config: tuple[str, ...] = ()  # dotted hokusai.yaml keys; a `*_env` key names the variable to read
    doc: str = ""  # only where no variable, schema description or option help says it
    default: Any = None  # its value when no way in gives one (a variable MLflow reads: what the tool sets)
    parse: Callable[[Any, str], Any] | None = None  # raw value, name -> value; raises InputError
    path: bool = False  # a file: a relative path in hokusai.yaml starts at the file's folder
    ci: tuple[EnvVar, ...] = ()  # what CI systems set, read in this order when `env` is unset
    built_by: str | None = None  # the module of `settings` that builds it, where layering cannot

    @property
    def argument(self) -> str | None:
        """Its name among ``load_settings``'s flags: the flag's, in snake_case, else the key."""
        return self.flag[2:].replace("-", "_") if self.flag else self.key

    @property
    def name(self) -> str:
        """What an error calls it: its variable, else its action input, else its flag."""
        if self.env is not None:
            return self.env.name
        return self.input or self.flag or str(self.key)


def _same_everywhere(key: str, **more: Any) -> Setting:
    """A registration input: the same name as a flag, an action input and a top-level hokusai.yaml key."""
    return Setting(key, flag="--" + key.replace("_", "-"), input=key.replace("_", "-"), config=(key,), **more)


def _positive(key: str, var: EnvVar, dotted: str, default: float) -> Setting:
    """A positive number (of seconds, or of MiB/s) from its variable or its hokusai.yaml key."""
    return Setting(key, env=var, config=(dotted,), default=default, parse=parsers.positive)


def _passed_through(var: EnvVar, default: str | None = None) -> Setting:
    """A variable MLflow or Google read themselves; ``default``: the value the tool sets when it is unset."""
    return Setting(None, env=var, default=default)


SETTINGS: tuple[Setting, ...] = (
    # the registration
    _same_everywhere("token_id"),
    _same_everywhere("model_path", path=True),
    _same_everywhere("metric"),
    _same_everywhere("baseline"),  # raw: validated against the metric by the core
    _same_everywhere("metric_value"),
    _same_everywhere("metrics_file", path=True),
    _same_everywhere("predictions", path=True),
    _same_everywhere("label_column"),
    _same_everywhere("score_column"),
    _same_everywhere("positive_label", parse=parsers.text),
    _same_everywhere("mlflow_run_id"),
    _same_everywhere("min_improvement", parse=parsers.text),
    _same_everywhere("compare_to"),
    _same_everywhere("set_alias"),
    _same_everywhere("dry_run", default=False, parse=parsers.boolean),
    Setting("config_path", flag="--config", input="config", doc="Path of hokusai.yaml.", built_by="loader"),
    Setting("home", env=env.HOKUSAI_HOME, default=".hokusai", built_by="loader"),
    # MLflow
    Setting(
        "mlflow_tracking_uri",
        flag="--mlflow-tracking-uri",
        input="mlflow-tracking-uri",
        env=env.MLFLOW_TRACKING_URI,
        config=("mlflow.tracking_uri",),
        built_by="credentials",
    ),
    Setting(None, input="mlflow-tracking-token", env=env.MLFLOW_TRACKING_TOKEN),
    _passed_through(env.MLFLOW_TRACKING_USERNAME),
    _passed_through(env.MLFLOW_TRACKING_PASSWORD),
    Setting("mlflow_experiment", env=env.HOKUSAI_MLFLOW_EXPERIMENT, config=("mlflow.experiment",), default="hokusai"),
    _positive("mlflow_timeout", env.HOKUSAI_MLFLOW_TIMEOUT, "mlflow.timeout", 30.0),
    _positive(
        "upload_stall_timeout",
        env.HOKUSAI_UPLOAD_STALL_TIMEOUT,
        "mlflow.upload_stall_timeout",
        DEFAULT_UPLOAD_STALL_SECONDS,
    ),
    _positive("upload_min_rate", env.HOKUSAI_UPLOAD_MIN_RATE, "mlflow.upload_min_rate", DEFAULT_UPLOAD_MIN_RATE_MIB_S),
    _passed_through(env.MLFLOW_HTTP_REQUEST_MAX_RETRIES, "3"),
    _passed_through(env.MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR, "1"),
    _passed_through(env.MLFLOW_HTTP_REQUEST_BACKOFF_JITTER, "0.5"),
    _passed_through(env.MLFLOW_HTTP_REQUEST_MAX_RETRIES_LIMIT),
    _passed_through(env.MLFLOW_HTTP_REQUEST_MAX_BACKOFF_FACTOR_LIMIT),
    _passed_through(env.MLFLOW_HTTP_REQUEST_TIMEOUT),
    _passed_through(env.MLFLOW_HTTP_RESPECT_RETRY_AFTER_HEADER),
    _passed_through(env.MLFLOW_TRACKING_INSECURE_TLS),
    _passed_through(env.MLFLOW_HTTP_TCP_KEEPALIVE),
    _passed_through(env.MLFLOW_HTTP_TCP_KEEPALIVE_IDLE),
    _passed_through(env.MLFLOW_HTTP_TCP_KEEPALIVE_INTERVAL),
    _passed_through(env.MLFLOW_HTTP_TCP_KEEPALIVE_COUNT),
    _passed_through(env.MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT, "true"),
    _passed_through(env.MLFLOW_DISABLE_TELEMETRY, "true"),
    # the Hokusai site database
    Setting(
        "database_url",
        flag="--database-url",
        input="database-url",
        env=env.HOKUSAI_DATABASE_URL,
        config=("database.url", "database.url_env"),
        built_by="credentials",
    ),
    _positive("database_timeout", env.HOKUSAI_DATABASE_TIMEOUT, "database.timeout", 10.0),
    # events
    Setting(
        "event_sinks",
        flag="--event-sinks",
        input="event-sinks",
        env=env.HOKUSAI_EVENT_SINKS,
        config=("events.sinks",),
        default=("database",),
        parse=parsers.event_sinks,
    ),
    Setting("event_source", env=env.HOKUSAI_EVENT_SOURCE, config=("events.source",), default="hokusai-ml-platform"),
    Setting("pubsub_topic", input="pubsub-topic", env=env.HOKUSAI_PUBSUB_TOPIC, config=("events.pubsub.topic",)),
    _positive("pubsub_timeout", env.HOKUSAI_PUBSUB_TIMEOUT, "events.pubsub.timeout", 30.0),
    _passed_through(env.PUBSUB_EMULATOR_HOST),
    Setting("webhook_url", input="webhook-url", env=env.HOKUSAI_WEBHOOK_URL, config=("events.webhook.url",)),
    Setting(
        "webhook_secret",
        input="webhook-secret",
        env=env.HOKUSAI_WEBHOOK_SECRET,
        config=("events.webhook.secret_env",),
        built_by="credentials",
    ),
    _positive("webhook_timeout", env.HOKUSAI_WEBHOOK_TIMEOUT, "events.webhook.timeout", 10.0),
    Setting(
        "webhook_allow_http",
        env=env.HOKUSAI_WEBHOOK_ALLOW_HTTP,
        config=("events.webhook.allow_http",),
        default=False,
        parse=parsers.boolean,
    ),
    # concurrency and provenance
    Setting("claim_ttl", env=env.HOKUSAI_CLAIM_TTL, default=300.0, parse=parsers.positive),
    Setting("relay_lease", env=env.HOKUSAI_RELAY_LEASE, default=DEFAULT_RELAY_LEASE, parse=parsers.relay_lease),
    Setting(
        "git.sha",
        env=env.HOKUSAI_GIT_SHA,
        ci=(env.GITHUB_SHA, env.CI_COMMIT_SHA, env.GIT_COMMIT, env.BUILDKITE_COMMIT),
        built_by="provenance",
    ),
    Setting(
        "git.ref",
        env=env.HOKUSAI_GIT_REF,
        ci=(env.GITHUB_REF, env.CI_COMMIT_REF_NAME, env.GIT_BRANCH, env.BUILDKITE_BRANCH),
        built_by="provenance",
    ),
    Setting(
        "git.repository",
        env=env.HOKUSAI_GIT_REPOSITORY,
        ci=(env.GITHUB_REPOSITORY, env.CI_PROJECT_PATH, env.BUILDKITE_REPO),
        built_by="provenance",
    ),
    Setting(
        "ci_run_url",
        env=env.HOKUSAI_CI_RUN_URL,
        ci=(env.CI_JOB_URL, env.BUILD_URL, env.BUILDKITE_BUILD_URL),  # after GitHub's run page
        built_by="provenance",
    ),
    # signing
    Setting(
        "sign",
        flag="--sign",
        input="sign",
        env=env.HOKUSAI_SIGN,
        config=("signing.method",),
        default="none",
        built_by="signing",
    ),
    Setting(
        "signing_key_path",
        flag="--signing-key",
        env=env.HOKUSAI_SIGNING_KEY_PATH,
        config=("signing.key_path",),
        path=True,
    ),
    Setting("signing_key_pem", input="signing-key", env=env.HOKUSAI_SIGNING_KEY, built_by="signing"),
    Setting(
        "signing_certificate_chain",
        flag="--signing-certificate-chain",
        input="signing-certificate-chain",
        env=env.HOKUSAI_SIGNING_CERTIFICATE_CHAIN,
        config=("signing.certificate_chain",),
        default=(),
        built_by="signing",
    ),
    Setting("sigstore_identity_token", env=env.SIGSTORE_ID_TOKEN),
    Setting("oidc_request_url", env=env.ACTIONS_ID_TOKEN_REQUEST_URL),
    Setting("oidc_request_token", env=env.ACTIONS_ID_TOKEN_REQUEST_TOKEN),
    Setting("oidc_issuer", config=("signing.oidc_issuer",)),
)

BY_KEY: dict[str, Setting] = {setting.key: setting for setting in SETTINGS if setting.key is not None}
BY_VARIABLE: dict[str, Setting] = {setting.env.name: setting for setting in SETTINGS if setting.env is not None}
