"""Entrypoint of the container image: the GitHub Action, or the CLI under `docker run`.

- On GitHub (``GITHUB_ACTIONS=true``) with no arguments: read the action's ``INPUT_*`` variables and
  ``hokusai.yaml``, mask every secret before printing anything, run the same registration core as
  the CLI, then write ``$GITHUB_OUTPUT``, a Markdown table to ``$GITHUB_STEP_SUMMARY`` and
  ``::error`` / ``::warning`` annotations. Exit codes are the CLI's (DESIGN.md).
- Anywhere else, or with arguments (``docker run IMAGE model register ...``): exactly the CLI.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Mapping

from hokusai_action import github
from hokusai_action.cli import install_sigterm_handler, one_line, unexpected_failure
from hokusai_action.errors import EXIT_EVENTS_PENDING, EXIT_INTERNAL, HokusaiError, InternalError, ServiceUnavailable
from hokusai_action.redact import install_log_redaction, redact, register_secret, registered_secrets, url_password

SECRET_INPUTS = ("database-url", "webhook-secret", "mlflow-tracking-token", "signing-key")
SECRET_ENVIRONMENT = (
    "HOKUSAI_DATABASE_URL",
    "HOKUSAI_WEBHOOK_SECRET",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_PASSWORD",
    "HOKUSAI_SIGNING_KEY",
    "SIGSTORE_ID_TOKEN",
    "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
)
# action input -> settings key (the CLI option in snake_case)
INPUT_TO_FLAG = {
    "token-id": "token_id",
    "model-path": "model_path",
    "metric": "metric",
    "baseline": "baseline",
    "metric-value": "metric_value",
    "metrics-file": "metrics_file",
    "predictions": "predictions",
    "label-column": "label_column",
    "score-column": "score_column",
    "positive-label": "positive_label",
    "mlflow-run-id": "mlflow_run_id",
    "min-improvement": "min_improvement",
    "compare-to": "compare_to",
    "set-alias": "set_alias",
    "config": "config",
    "dry-run": "dry_run",
    "mlflow-tracking-uri": "mlflow_tracking_uri",
    "database-url": "database_url",
    "event-sinks": "event_sinks",
    "pubsub-topic": "pubsub_topic",
    "webhook-url": "webhook_url",
    "webhook-secret": "webhook_secret",
    "sign": "sign",
    "signing-key": "signing_key_pem",  # the PEM itself (a secret), as HOKUSAI_SIGNING_KEY
    "signing-certificate-chain": "signing_certificate_chain",
}
DEFAULT_CONFIG = "hokusai.yaml"
INTERNAL_HINT = "Re-run with the input debug: true and report it."


def secret_values(inputs: Mapping[str, str], environ: Mapping[str, str]) -> set[str]:
    """Every secret given as an input or a known variable; a URL's password counts on its own too
    (a database URL is masked whole, since it names hosts and users, and its password separately)."""
    values = [inputs.get(name) for name in SECRET_INPUTS] + [environ.get(name) for name in SECRET_ENVIRONMENT]
    return {secret for value in filter(None, values) for secret in filter(None, (value, url_password(value)))}


def mask_secrets(inputs: Mapping[str, str], environ: Mapping[str, str]) -> None:
    """Tell the runner to mask every secret, and remember them for ``redact``, before any output."""
    for secret in sorted(secret_values(inputs, environ)):
        github.add_mask(secret)
        register_secret(secret)


def flags_from_inputs(inputs: Mapping[str, str]) -> dict[str, object]:
    flags: dict[str, object] = {INPUT_TO_FLAG[name]: value for name, value in inputs.items() if name in INPUT_TO_FLAG}
    # the config input defaults to hokusai.yaml: a missing default file simply means "no file"
    if flags.get("config") == DEFAULT_CONFIG and not os.path.isfile(DEFAULT_CONFIG):
        flags.pop("config")
    return flags


def run_action(environ: Mapping[str, str]) -> int:
    inputs = github.read_inputs(environ)
    mask_secrets(inputs, environ)
    debug = inputs.get("debug", "false").lower() == "true"
    if inputs.get("mlflow-tracking-token"):
        os.environ["MLFLOW_TRACKING_TOKEN"] = inputs["mlflow-tracking-token"]  # MLflow reads it itself

    from hokusai_action.commands.register import describe_result, run_register, undelivered_lines
    from hokusai_action.settings.loader import load_settings
    from hokusai_action.vendors import quiet_vendor_logs

    quiet_vendor_logs()
    logging.basicConfig(level=logging.INFO if debug else logging.WARNING, format="%(levelname)s %(message)s")
    install_log_redaction()
    install_sigterm_handler()
    try:
        settings = load_settings(flags_from_inputs(inputs))
        # secrets read from variables that hokusai.yaml names (url_env, secret_env) are masked too
        for secret in sorted(registered_secrets() - secret_values(inputs, environ)):
            github.add_mask(secret)
        result, code = run_register(settings, quiet=inputs.get("quiet", "false").lower() == "true")
    except HokusaiError as exc:
        return report_failure(exc.title, exc.one_line(), exc.exit_code, debug)
    except KeyboardInterrupt:
        return report_failure("Interrupted", "Interrupted. Re-run the job: it resumes where it stopped.", 130, False)
    except Exception as exc:
        line, code = unexpected_failure(exc, INTERNAL_HINT)
        title = InternalError.title if code == EXIT_INTERNAL else ServiceUnavailable.title
        return report_failure(title, line, code, debug)

    data = result.as_dict()
    for line in describe_result(result):
        print(redact(line))
    github.set_outputs(github.outputs_from_result(data))
    table = github.summary_markdown(data, tracking_uri=settings.mlflow_tracking_uri)
    if result.refusal is not None:  # status rejected: the outputs and the gate's table, then the failure
        refusal = result.refusal
        return report_failure(refusal.title, refusal.one_line(), code, debug=False, table=table)
    github.write_summary(table)
    for warning in result.warnings:
        github.annotation("warning", warning, title="Registered value differs")
    if code == EXIT_EVENTS_PENDING:
        for line in undelivered_lines(result):
            github.annotation("warning", redact(line), title="Event not delivered")
    return code


def report_failure(title: str, line: str, code: int, debug: bool, *, table: str | None = None) -> int:
    """The ``::error`` annotation, the failure's step summary (with ``table``, the result's, under it)
    and the ``error:`` line; returns ``code``."""
    if debug:
        print(redact(traceback.format_exc()), file=sys.stderr)
    github.annotation("error", line, title=title)
    github.write_summary(github.failure_summary(title, line) + (f"\n{table}" if table else ""))
    print(f"error: {one_line(redact(line))}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if github.on_github() and not argv:
        try:
            return run_action(os.environ)
        except Exception as exc:  # outside the registration: reading inputs, writing outputs
            return report_failure(InternalError.title, unexpected_failure(exc, INTERNAL_HINT)[0], EXIT_INTERNAL, False)
    from hokusai_action.cli import main as cli_main

    try:
        cli_main.main(args=argv, prog_name="hokusai-ml-platform", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    return 0


if __name__ == "__main__":
    from hokusai_action.process import short_command

    with short_command():
        sys.exit(main())
