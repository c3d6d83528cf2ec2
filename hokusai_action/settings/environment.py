"""Every environment variable the settings read, declared once, typed, with a one-line doc.

``settings.load_settings`` reads the environment only through these declarations (and the variables
a ``hokusai.yaml`` names, ``url_env`` and ``secret_env``). ``ALL`` are the variables a user sets, each
one row of ``settings.table`` (the settings reference, docs/reference/settings.md, is generated from
it); ``CI`` are those a CI system sets, read for the provenance recorded with a model when the
``HOKUSAI_GIT_*`` and ``HOKUSAI_CI_RUN_URL`` variables are unset. Pure data: importing it costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EnvVar:
    name: str
    kind: type
    doc: str
    secret: bool = False
    ci: bool = False  # set by a CI system, not by the user


MLFLOW_TRACKING_URI = EnvVar("MLFLOW_TRACKING_URI", str, "MLflow server or store (default: SQLite under .hokusai/)")
MLFLOW_TRACKING_TOKEN = EnvVar(
    "MLFLOW_TRACKING_TOKEN", str, "Bearer token for the MLflow server (read by MLflow itself)", secret=True
)
MLFLOW_TRACKING_PASSWORD = EnvVar(
    "MLFLOW_TRACKING_PASSWORD", str, "Basic-auth password for the MLflow server (read by MLflow)", secret=True
)
# A user name is not a credential and is not registered for masking (a common word like "admin" would
# shred every line); inside a URL's user-info it is masked with the password all the same.
MLFLOW_TRACKING_USERNAME = EnvVar(
    "MLFLOW_TRACKING_USERNAME", str, "Basic-auth user for the MLflow server (read by MLflow)"
)
MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT = EnvVar(
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT",
    bool,
    "MLflow's own switch; the tool sets it to true so MLflow never prints the tracking URI (with its credentials)",
)
MLFLOW_DISABLE_TELEMETRY = EnvVar(
    "MLFLOW_DISABLE_TELEMETRY",
    bool,
    "MLflow's own switch; the tool sets it to true unless you set it (MLflow's telemetry thread races our requests)",
)
# MLflow's HTTP client reads these itself, as integers (the jitter as a float), and checks their limits
# only when it sends a request: ``load_settings`` checks them first, so a value MLflow cannot use is
# exit 2 before anything changes, not an internal error or an outage halfway through
MLFLOW_HTTP_REQUEST_MAX_RETRIES = EnvVar(
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES", int, "MLflow's retries of a failed request (whole number, 0-10; default here 3)"
)
MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR = EnvVar(
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", int, "MLflow's backoff between retries (whole seconds, 0-120; default here 1)"
)
MLFLOW_HTTP_REQUEST_BACKOFF_JITTER = EnvVar(
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", float, "MLflow's random extra backoff (seconds; default here 0.5)"
)
MLFLOW_HTTP_REQUEST_TIMEOUT = EnvVar(
    "MLFLOW_HTTP_REQUEST_TIMEOUT", int, "MLflow's wait for the next bytes of an answer (whole seconds; see Big models)"
)
MLFLOW_HTTP_RESPECT_RETRY_AFTER_HEADER = EnvVar(
    "MLFLOW_HTTP_RESPECT_RETRY_AFTER_HEADER", bool, "MLflow's switch: wait out a server's Retry-After (default true)"
)
MLFLOW_TRACKING_INSECURE_TLS = EnvVar(
    "MLFLOW_TRACKING_INSECURE_TLS", bool, "MLflow's switch: skip TLS certificate checks (default false)"
)
# MLflow's ceilings on the retries and the backoff factor: private variables of its own, which a user may raise
MLFLOW_HTTP_REQUEST_MAX_RETRIES_LIMIT = EnvVar(
    "_MLFLOW_HTTP_REQUEST_MAX_RETRIES_LIMIT", int, "MLflow's ceiling on MLFLOW_HTTP_REQUEST_MAX_RETRIES (default 10)"
)
MLFLOW_HTTP_REQUEST_MAX_BACKOFF_FACTOR_LIMIT = EnvVar(
    "_MLFLOW_HTTP_REQUEST_MAX_BACKOFF_FACTOR_LIMIT",
    int,
    "MLflow's ceiling on MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR (default 120)",
)
MLFLOW_HTTP_TCP_KEEPALIVE = EnvVar("MLFLOW_HTTP_TCP_KEEPALIVE", bool, "MLflow's TCP keepalive on its connections")
MLFLOW_HTTP_TCP_KEEPALIVE_IDLE = EnvVar("MLFLOW_HTTP_TCP_KEEPALIVE_IDLE", int, "Idle seconds before keepalive probes")
MLFLOW_HTTP_TCP_KEEPALIVE_INTERVAL = EnvVar(
    "MLFLOW_HTTP_TCP_KEEPALIVE_INTERVAL", int, "Seconds between keepalive probes"
)
MLFLOW_HTTP_TCP_KEEPALIVE_COUNT = EnvVar("MLFLOW_HTTP_TCP_KEEPALIVE_COUNT", int, "Keepalive probes before giving up")
HOKUSAI_MLFLOW_EXPERIMENT = EnvVar("HOKUSAI_MLFLOW_EXPERIMENT", str, "MLflow experiment for registration runs")
HOKUSAI_MLFLOW_TIMEOUT = EnvVar(
    "HOKUSAI_MLFLOW_TIMEOUT", float, "Seconds to keep trying an unreachable MLflow before exit 4 (default 30)"
)
HOKUSAI_UPLOAD_STALL_TIMEOUT = EnvVar(
    "HOKUSAI_UPLOAD_STALL_TIMEOUT",
    float,
    "Seconds an upload may hear nothing from MLflow or the artifact store before it is retried (default 60)",
)
HOKUSAI_UPLOAD_MIN_RATE = EnvVar(
    "HOKUSAI_UPLOAD_MIN_RATE",
    float,
    "Slowest MiB/s a healthy store takes an upload at: each file also waits size / rate for its answer (default 10)",
)
HOKUSAI_DATABASE_URL = EnvVar(
    "HOKUSAI_DATABASE_URL", str, "SQLAlchemy URL of the Hokusai site database (its password is masked)"
)
HOKUSAI_DATABASE_TIMEOUT = EnvVar(
    "HOKUSAI_DATABASE_TIMEOUT", float, "Seconds to wait for the database connection (default 10)"
)
HOKUSAI_EVENT_SINKS = EnvVar("HOKUSAI_EVENT_SINKS", str, "Comma list of event sinks: pubsub, webhook, database")
HOKUSAI_PUBSUB_TOPIC = EnvVar("HOKUSAI_PUBSUB_TOPIC", str, "Pub/Sub topic, projects/P/topics/T")
HOKUSAI_PUBSUB_TIMEOUT = EnvVar("HOKUSAI_PUBSUB_TIMEOUT", float, "Seconds to wait for a Pub/Sub publish (default 30)")
PUBSUB_EMULATOR_HOST = EnvVar("PUBSUB_EMULATOR_HOST", str, "host:port of a Pub/Sub emulator (Google's variable)")
HOKUSAI_WEBHOOK_URL = EnvVar("HOKUSAI_WEBHOOK_URL", str, "Webhook endpoint receiving the signed event")
HOKUSAI_WEBHOOK_SECRET = EnvVar(
    "HOKUSAI_WEBHOOK_SECRET", str, "Standard Webhooks signing secret (whsec_...)", secret=True
)
HOKUSAI_WEBHOOK_TIMEOUT = EnvVar("HOKUSAI_WEBHOOK_TIMEOUT", float, "Seconds per webhook attempt (default 10)")
HOKUSAI_WEBHOOK_ALLOW_HTTP = EnvVar(
    "HOKUSAI_WEBHOOK_ALLOW_HTTP", bool, "Allow plain http:// webhooks to non-loopback hosts (default false)"
)
HOKUSAI_EVENT_SOURCE = EnvVar("HOKUSAI_EVENT_SOURCE", str, "CloudEvents `source` of emitted events")
HOKUSAI_CLAIM_TTL = EnvVar(
    "HOKUSAI_CLAIM_TTL",
    float,
    "Seconds a registration's claim on a token lasts before another run may take it",
)
HOKUSAI_RELAY_LEASE = EnvVar(
    "HOKUSAI_RELAY_LEASE",
    float,
    "Seconds a relay's lease on a delivery lasts without renewal (renewed every quarter, also mid-send; default 120)",
)
HOKUSAI_SIGN = EnvVar("HOKUSAI_SIGN", str, "Signing method: none (default), key, certificate, sigstore (keyless)")
HOKUSAI_SIGNING_KEY = EnvVar(
    "HOKUSAI_SIGNING_KEY", str, "PEM of the EC private key that signs registrations (never printed)", secret=True
)
HOKUSAI_SIGNING_KEY_PATH = EnvVar("HOKUSAI_SIGNING_KEY_PATH", str, "PEM private key file that signs")
HOKUSAI_SIGNING_CERTIFICATE_CHAIN = EnvVar(
    "HOKUSAI_SIGNING_CERTIFICATE_CHAIN",
    str,
    "Comma list of PEM files: key's certificate first, then chain",
)
SIGSTORE_ID_TOKEN = EnvVar("SIGSTORE_ID_TOKEN", str, "OIDC identity token for keyless signing", secret=True)
ACTIONS_ID_TOKEN_REQUEST_URL = EnvVar(
    "ACTIONS_ID_TOKEN_REQUEST_URL", str, "Set by GitHub when the job has `id-token: write`: where keyless signing asks"
)
ACTIONS_ID_TOKEN_REQUEST_TOKEN = EnvVar(
    "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
    str,
    "Set by GitHub with the URL above: its bearer token",
    secret=True,
)
HOKUSAI_CI_RUN_URL = EnvVar(
    "HOKUSAI_CI_RUN_URL",
    str,
    "CI run URL in the signed statement (default: from CI variables)",
)
HOKUSAI_HOME = EnvVar("HOKUSAI_HOME", str, "Folder for the embedded defaults (default ./.hokusai)")
HOKUSAI_GIT_SHA = EnvVar("HOKUSAI_GIT_SHA", str, "Commit recorded with the model (default: CI variables or git)")
HOKUSAI_GIT_REF = EnvVar("HOKUSAI_GIT_REF", str, "Git ref recorded with the model")
HOKUSAI_GIT_REPOSITORY = EnvVar("HOKUSAI_GIT_REPOSITORY", str, "Repository recorded with the model")

# Set by CI systems: GitHub Actions, GitLab CI, Jenkins, Buildkite
GITHUB_SHA = EnvVar("GITHUB_SHA", str, "GitHub Actions: the commit of the run", ci=True)
GITHUB_REF = EnvVar("GITHUB_REF", str, "GitHub Actions: the ref of the run", ci=True)
GITHUB_REPOSITORY = EnvVar("GITHUB_REPOSITORY", str, "GitHub Actions: owner/name of the repository", ci=True)
GITHUB_SERVER_URL = EnvVar("GITHUB_SERVER_URL", str, "GitHub Actions: the server, https://github.com", ci=True)
GITHUB_RUN_ID = EnvVar("GITHUB_RUN_ID", str, "GitHub Actions: the workflow run's id", ci=True)
GITHUB_RUN_ATTEMPT = EnvVar("GITHUB_RUN_ATTEMPT", str, "GitHub Actions: the run's attempt", ci=True)
CI_COMMIT_SHA = EnvVar("CI_COMMIT_SHA", str, "GitLab CI: the commit of the pipeline", ci=True)
CI_COMMIT_REF_NAME = EnvVar("CI_COMMIT_REF_NAME", str, "GitLab CI: the branch or tag", ci=True)
CI_PROJECT_PATH = EnvVar("CI_PROJECT_PATH", str, "GitLab CI: group/project", ci=True)
CI_JOB_URL = EnvVar("CI_JOB_URL", str, "GitLab CI: the job's page", ci=True)
GIT_COMMIT = EnvVar("GIT_COMMIT", str, "Jenkins (git plugin): the commit of the build", ci=True)
GIT_BRANCH = EnvVar("GIT_BRANCH", str, "Jenkins (git plugin): the branch", ci=True)
BUILD_URL = EnvVar("BUILD_URL", str, "Jenkins: the build's page", ci=True)
BUILDKITE_COMMIT = EnvVar("BUILDKITE_COMMIT", str, "Buildkite: the commit of the build", ci=True)
BUILDKITE_BRANCH = EnvVar("BUILDKITE_BRANCH", str, "Buildkite: the branch", ci=True)
BUILDKITE_REPO = EnvVar("BUILDKITE_REPO", str, "Buildkite: the repository", ci=True)
BUILDKITE_BUILD_URL = EnvVar("BUILDKITE_BUILD_URL", str, "Buildkite: the build's page", ci=True)

_DECLARED = tuple(v for v in globals().values() if isinstance(v, EnvVar))
ALL: tuple[EnvVar, ...] = tuple(v for v in _DECLARED if not v.ci)
CI: tuple[EnvVar, ...] = tuple(v for v in _DECLARED if v.ci)
