"""Where each setting can be given: its `model register` flag, action input, environment variable and
``hokusai.yaml`` key.

``settings.load_settings`` layers them (flag / action input > environment > ``hokusai.yaml`` >
default) and ``environment`` declares each variable. This table names, for every setting, the ways in,
so the settings reference is generated from it; tests/unit/test_docs.py checks it against
``load_settings`` itself (each way in really sets that setting), the click app, ``action.yml``, the
JSON Schema of ``hokusai.yaml`` and ``environment.ALL`` (nothing left out), so it cannot drift.
Pure data: importing it costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from hokusai_action.settings import environment as env


@dataclass(frozen=True)
class Setting:
    key: str | None  # the Settings attribute it sets (dotted for a nested one); None: read by MLflow or Google
    flag: str | None = None  # option of `hokusai-ml-platform model register`
    input: str | None = None  # input of the GitHub Action (action.yml)
    env: env.EnvVar | None = None
    config: tuple[str, ...] = ()  # dotted hokusai.yaml keys; a `*_env` key names the variable to read
    doc: str = ""  # only where no variable, schema description or option help says it


def _same_everywhere(key: str) -> Setting:
    """A registration input: the same name as a flag, an action input and a top-level hokusai.yaml key."""
    return Setting(key, flag="--" + key.replace("_", "-"), input=key.replace("_", "-"), config=(key,))


SETTINGS: tuple[Setting, ...] = (
    # the registration
    *(
        _same_everywhere(key)
        for key in (
            "token_id",
            "model_path",
            "metric",
            "baseline",
            "metric_value",
            "metrics_file",
            "predictions",
            "label_column",
            "score_column",
            "positive_label",
            "mlflow_run_id",
            "min_improvement",
            "compare_to",
            "set_alias",
            "dry_run",
        )
    ),
    Setting("config_path", flag="--config", input="config", doc="Path of hokusai.yaml."),
    Setting("home", env=env.HOKUSAI_HOME),
    # MLflow
    Setting(
        "mlflow_tracking_uri",
        flag="--mlflow-tracking-uri",
        input="mlflow-tracking-uri",
        env=env.MLFLOW_TRACKING_URI,
        config=("mlflow.tracking_uri",),
    ),
    Setting(None, input="mlflow-tracking-token", env=env.MLFLOW_TRACKING_TOKEN),
    Setting(None, env=env.MLFLOW_TRACKING_USERNAME),
    Setting(None, env=env.MLFLOW_TRACKING_PASSWORD),
    Setting("mlflow_experiment", env=env.HOKUSAI_MLFLOW_EXPERIMENT, config=("mlflow.experiment",)),
    Setting("mlflow_timeout", env=env.HOKUSAI_MLFLOW_TIMEOUT, config=("mlflow.timeout",)),
    Setting("upload_stall_timeout", env=env.HOKUSAI_UPLOAD_STALL_TIMEOUT, config=("mlflow.upload_stall_timeout",)),
    Setting("upload_min_rate", env=env.HOKUSAI_UPLOAD_MIN_RATE, config=("mlflow.upload_min_rate",)),
    *(
        Setting(None, env=var)
        for var in (
            env.MLFLOW_HTTP_REQUEST_MAX_RETRIES,
            env.MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR,
            env.MLFLOW_HTTP_REQUEST_BACKOFF_JITTER,
            env.MLFLOW_HTTP_REQUEST_TIMEOUT,
            env.MLFLOW_HTTP_RESPECT_RETRY_AFTER_HEADER,
            env.MLFLOW_TRACKING_INSECURE_TLS,
            env.MLFLOW_HTTP_TCP_KEEPALIVE,
            env.MLFLOW_HTTP_TCP_KEEPALIVE_IDLE,
            env.MLFLOW_HTTP_TCP_KEEPALIVE_INTERVAL,
            env.MLFLOW_HTTP_TCP_KEEPALIVE_COUNT,
            env.MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT,
            env.MLFLOW_DISABLE_TELEMETRY,
        )
    ),
    # the Hokusai site database
    Setting(
        "database_url",
        flag="--database-url",
        input="database-url",
        env=env.HOKUSAI_DATABASE_URL,
        config=("database.url", "database.url_env"),
    ),
    Setting("database_timeout", env=env.HOKUSAI_DATABASE_TIMEOUT, config=("database.timeout",)),
    # events
    Setting(
        "event_sinks", flag="--event-sinks", input="event-sinks", env=env.HOKUSAI_EVENT_SINKS, config=("events.sinks",)
    ),
    Setting("event_source", env=env.HOKUSAI_EVENT_SOURCE, config=("events.source",)),
    Setting("pubsub_topic", input="pubsub-topic", env=env.HOKUSAI_PUBSUB_TOPIC, config=("events.pubsub.topic",)),
    Setting("pubsub_timeout", env=env.HOKUSAI_PUBSUB_TIMEOUT, config=("events.pubsub.timeout",)),
    Setting(None, env=env.PUBSUB_EMULATOR_HOST),
    Setting("webhook_url", input="webhook-url", env=env.HOKUSAI_WEBHOOK_URL, config=("events.webhook.url",)),
    Setting(
        "webhook_secret",
        input="webhook-secret",
        env=env.HOKUSAI_WEBHOOK_SECRET,
        config=("events.webhook.secret_env",),
    ),
    Setting("webhook_timeout", env=env.HOKUSAI_WEBHOOK_TIMEOUT, config=("events.webhook.timeout",)),
    Setting("webhook_allow_http", env=env.HOKUSAI_WEBHOOK_ALLOW_HTTP, config=("events.webhook.allow_http",)),
    # concurrency and provenance
    Setting("claim_ttl", env=env.HOKUSAI_CLAIM_TTL),
    Setting("relay_lease", env=env.HOKUSAI_RELAY_LEASE),
    Setting("git.sha", env=env.HOKUSAI_GIT_SHA),
    Setting("git.ref", env=env.HOKUSAI_GIT_REF),
    Setting("git.repository", env=env.HOKUSAI_GIT_REPOSITORY),
    Setting("ci_run_url", env=env.HOKUSAI_CI_RUN_URL),
    # signing
    Setting("sign", flag="--sign", input="sign", env=env.HOKUSAI_SIGN, config=("signing.method",)),
    Setting("signing_key_path", flag="--signing-key", env=env.HOKUSAI_SIGNING_KEY_PATH, config=("signing.key_path",)),
    Setting("signing_key_pem", input="signing-key", env=env.HOKUSAI_SIGNING_KEY),
    Setting(
        "signing_certificate_chain",
        flag="--signing-certificate-chain",
        input="signing-certificate-chain",
        env=env.HOKUSAI_SIGNING_CERTIFICATE_CHAIN,
        config=("signing.certificate_chain",),
    ),
    Setting("sigstore_identity_token", env=env.SIGSTORE_ID_TOKEN),
    Setting("oidc_request_url", env=env.ACTIONS_ID_TOKEN_REQUEST_URL),
    Setting("oidc_request_token", env=env.ACTIONS_ID_TOKEN_REQUEST_TOKEN),
    Setting("oidc_issuer", config=("signing.oidc_issuer",)),
)
