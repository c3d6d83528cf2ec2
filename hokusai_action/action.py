"""The GitHub Action: one face of the tool (the command line, ``hokusai_action.cli``, is the other).

Reads the action's ``INPUT_*`` variables and ``hokusai.yaml``, masks every secret before printing
anything, runs the same registration as ``model register``, then writes ``$GITHUB_OUTPUT``, a
Markdown table to ``$GITHUB_STEP_SUMMARY`` and ``::error`` / ``::warning`` annotations. Failures are
classified and worded by ``hokusai_action.failure``, as the CLI's are; exit codes are the CLI's
(DESIGN.md). ``entrypoint.py`` runs it on GitHub's runner. Never imports the command line.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from hokusai_action import github
from hokusai_action.errors import EXIT_EVENTS_PENDING, EXIT_INTERNAL, InternalError
from hokusai_action.failure import (
    Failure,
    debug_traceback,
    error_line,
    failure_of,
    interrupted,
    start_command,
    unexpected,
)
from hokusai_action.redact import redact, register_secret, registered_secrets, url_password
from hokusai_action.settings import environment as env
from hokusai_action.settings.config_file import DEFAULT_CONFIG_NAME
from hokusai_action.settings.table import SETTINGS

if TYPE_CHECKING:
    from hokusai_action.registration.register import RegistrationResult
    from hokusai_action.settings.loader import Settings

# masked whole: every secret variable, and the database URL (it names hosts and users; its password
# is masked on its own too)
MASKED_VARIABLES = (env.HOKUSAI_DATABASE_URL, *(var for var in env.ALL if var.secret))
MASKED_INPUTS = tuple(setting.input for setting in SETTINGS if setting.input and setting.env in MASKED_VARIABLES)
# action input -> the flag load_settings takes it as (the CLI option in snake_case)
INPUT_TO_FLAG = {setting.input: setting.argument for setting in SETTINGS if setting.input and setting.argument}
INTERNAL_HINT = "Re-run with the input debug: true and report it."
INTERRUPTED_HINT = "Re-run the job: it resumes where it stopped."


def secret_values(inputs: Mapping[str, str], environ: Mapping[str, str]) -> set[str]:
    """Every secret given as an input or a known variable; a URL's password counts on its own too."""
    values = [inputs.get(name) for name in MASKED_INPUTS] + [environ.get(var.name) for var in MASKED_VARIABLES]
    return {secret for value in filter(None, values) for secret in filter(None, (value, url_password(value)))}


def mask_secrets(inputs: Mapping[str, str], environ: Mapping[str, str]) -> None:
    """Tell the runner to mask every secret, and remember them for ``redact``, before any output."""
    for secret in sorted(secret_values(inputs, environ)):
        github.add_mask(secret)
        register_secret(secret)


def flags_from_inputs(inputs: Mapping[str, str]) -> dict[str, object]:
    flags: dict[str, object] = {INPUT_TO_FLAG[name]: value for name, value in inputs.items() if name in INPUT_TO_FLAG}
    # the config input defaults to hokusai.yaml: a missing default file simply means "no file"
    if flags.get("config") == DEFAULT_CONFIG_NAME and not os.path.isfile(DEFAULT_CONFIG_NAME):
        flags.pop("config")
    return flags


def run_action(environ: Mapping[str, str]) -> int:
    """The action: inputs in; outputs, summary and annotations out; the exit code."""
    inputs = github.read_inputs(environ)
    mask_secrets(inputs, environ)
    debug = inputs.get("debug", "false").lower() == "true"
    if inputs.get("mlflow-tracking-token"):
        os.environ[env.MLFLOW_TRACKING_TOKEN.name] = inputs["mlflow-tracking-token"]  # MLflow reads it itself

    from hokusai_action.vendors import quiet_vendor_logs

    quiet_vendor_logs()
    start_command(debug=debug)
    try:
        settings, result, code = register(inputs, environ)
    except KeyboardInterrupt:
        return report_failure(interrupted(INTERRUPTED_HINT), debug=False)
    except Exception as exc:
        return report_failure(failure_of(exc, INTERNAL_HINT), debug=debug)
    return report_result(settings, result, code)


def register(inputs: Mapping[str, str], environ: Mapping[str, str]) -> tuple[Settings, RegistrationResult, int]:
    """Load the settings and register: the settings, the result and its exit code."""
    from hokusai_action.digest.background import prefetch_digest
    from hokusai_action.settings.loader import load_settings

    settings = load_settings(flags_from_inputs(inputs))
    # secrets read from variables that hokusai.yaml names (url_env, secret_env) are masked too
    for secret in sorted(registered_secrets() - secret_values(inputs, environ)):
        github.add_mask(secret)
    # a re-run's wall time is its hash: start it before the registration's imports, as the CLI does
    prefetched = prefetch_digest(settings.model_path)
    from hokusai_action.commands.register import run_register

    quiet = inputs.get("quiet", "false").lower() == "true"
    result, code = run_register(settings, quiet=quiet, prefetched=prefetched)
    return settings, result, code


def report_result(settings: Settings, result: RegistrationResult, code: int) -> int:
    """The result as the runner shows it: its lines, the outputs, the step summary, the annotations."""
    from hokusai_action.commands.register import describe_result, undelivered_lines

    data = result.as_dict()
    for line in describe_result(result):
        print(redact(line))
    github.set_outputs(github.outputs_from_result(data))
    table = github.summary_markdown(data, tracking_uri=settings.mlflow_tracking_uri)
    if result.refusal is not None:  # status rejected: the outputs and the gate's table, then the failure
        report_failure(Failure.of(result.refusal), debug=False, table=table)
        return code
    github.write_summary(table)
    for warning in result.warnings:
        github.annotation("warning", warning, title="Registered value differs")
    if code == EXIT_EVENTS_PENDING:
        for line in undelivered_lines(result):
            github.annotation("warning", redact(line), title="Event not delivered")
    return code


def report_failure(failure: Failure, *, debug: bool, table: str | None = None) -> int:
    """The ``::error`` annotation, the failure's step summary (with ``table``, the result's, under it)
    and the ``error:`` line; returns the failure's exit code."""
    if debug:
        print(debug_traceback(), file=sys.stderr)
    line = failure.line()
    github.annotation("error", line, title=failure.title)
    github.write_summary(github.failure_summary(failure.title, line) + (f"\n{table}" if table else ""))
    print(error_line(line), file=sys.stderr)
    return failure.exit_code


def run(environ: Mapping[str, str]) -> int:
    """The action, whatever happens: a failure outside the registration (reading inputs, writing
    outputs) is a bug, reported as one (exit 70)."""
    try:
        return run_action(environ)
    except Exception as exc:
        failure = replace(unexpected(exc, INTERNAL_HINT), exit_code=EXIT_INTERNAL, title=InternalError.title)
        return report_failure(failure, debug=False)
