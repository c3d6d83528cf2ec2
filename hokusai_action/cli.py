"""The ``hokusai-ml-platform`` command line.

Only click and the package's pure modules are imported here: ``--help`` must stay fast and must not
load MLflow, SQLAlchemy or Google clients. Each command imports ``hokusai_action.commands.register`` inside
its body, once it actually runs.
"""

from __future__ import annotations

import functools
import json
import math
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import click

from hokusai_action import __version__
from hokusai_action.errors import EXIT_INTERNAL, EXIT_SERVICE_UNAVAILABLE, HokusaiError
from hokusai_action.redact import install_log_redaction, redact

INTERNAL_ERROR = "internal error ({kind}): {detail}."
INTERNAL_HINT = "Re-run with --debug and report it."
SERVICE_OUTAGE = "a service did not answer ({kind}): {detail}."
SERVICE_OUTAGE_HINT = (
    "Check that MLflow and the database are up and reachable, then re-run: a finished step is not repeated."
)
INTERRUPTED = "Interrupted."
INTERRUPTED_HINT = "Re-run the same command: it resumes where it stopped."
EXIT_INTERRUPTED = 130
_MAX_DETAIL = 300  # characters of the exception's first line kept in the one error line

# Raw connection-level failures that escaped an adapter: an outage (exit 4, worth a retry), not a bug
# (exit 70). Names are (module, attribute), looked up only in modules already imported, so this
# costs no import: an exception of a module that is not loaded cannot have been raised.
_OUTAGE_TYPES = (
    ("builtins", "ConnectionError"),
    ("builtins", "TimeoutError"),
    ("socket", "gaierror"),
    ("requests.exceptions", "ConnectionError"),
    ("requests.exceptions", "Timeout"),
    ("urllib3.exceptions", "NewConnectionError"),
    ("urllib3.exceptions", "MaxRetryError"),
    ("urllib3.exceptions", "ProtocolError"),
    ("urllib3.exceptions", "TimeoutError"),
    ("sqlalchemy.exc", "OperationalError"),
    ("sqlalchemy.exc", "DisconnectionError"),
    ("sqlalchemy.exc", "TimeoutError"),
    ("psycopg2", "OperationalError"),
    ("google.api_core.exceptions", "ServiceUnavailable"),
    ("google.api_core.exceptions", "DeadlineExceeded"),
    ("google.api_core.exceptions", "RetryError"),
)
_GRPC_OUTAGE_CODES = ("UNAVAILABLE", "DEADLINE_EXCEEDED")
_VENDOR_WRAPPERS = frozenset({"mlflow", "google", "grpc", "requests", "urllib3", "sqlalchemy", "psycopg2"})

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class FiniteFloatRange(click.FloatRange):
    """click's ``FloatRange`` without NaN and the infinities: ``float("nan")`` fails every comparison,
    so ``nan`` passes any range (``--interval nan`` polled in a busy loop, ``--max-seconds nan`` never
    ended). Every float option of the command line takes this type."""

    name = "finite float range"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value} is not a finite number.", param, ctx)
        return super().convert(number, param, ctx)


def one_line(text: str) -> str:
    """``text`` with control characters escaped (a newline inside a value the user gave, a NUL): the
    error stays on one line and a terminal never interprets what it echoes."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def _fail(line: str, code: int) -> None:
    click.echo(f"error: {one_line(redact(line))}", err=True)
    sys.exit(code)


@dataclass(frozen=True)
class Failure:
    """One failed command as it is reported: the ``error:`` line on stderr and, with ``--output json``,
    the error object on stdout. ``kind`` is the failure's stable machine name (``HokusaiError.kind``;
    ``usage`` for click's own errors, ``internal`` for a bug)."""

    exit_code: int
    kind: str
    message: str
    hint: str | None = None

    @classmethod
    def of(cls, exc: HokusaiError) -> Failure:
        return cls(exit_code=exc.exit_code, kind=exc.kind, message=exc.message, hint=exc.hint)

    def line(self) -> str:
        return f"{self.message} {self.hint}" if self.hint else self.message

    def as_json(self) -> dict[str, Any]:
        hint = redact(self.hint) if self.hint else None
        error = {"exit_code": self.exit_code, "kind": self.kind, "message": redact(self.message), "hint": hint}
        return {"error": error}


def exit_with_failure(failure: Failure, *, json_output: bool) -> None:
    """Print ``failure`` (the error object on stdout first under ``--output json``) and exit with its code."""
    if json_output:
        click.echo(json.dumps(failure.as_json(), sort_keys=True))
    _fail(failure.line(), failure.exit_code)


def asks_for_json(argv: Sequence[str]) -> bool:
    """Whether a command line asks for ``--output json``: read from the raw arguments, since it must
    be known when click could not parse them (an unknown option, a bad value)."""
    asked = None
    for index, arg in enumerate(argv):
        if arg == "--":  # what follows is arguments, whatever they look like
            break
        if arg.startswith("--output="):
            asked = arg.partition("=")[2]
        elif arg == "--output" and index + 1 < len(argv):
            asked = argv[index + 1]  # given twice, the last one wins, as in click
    return asked == "json"


def _exception_chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain and len(chain) < 20:
        chain.append(current)
        # explicit causes (``raise ... from``); the implicit __context__ only of a vendor's wrapper
        # (MLflow raises its MlflowException inside ``except`` without ``from``). A bug of ours, or a
        # builtin error, raised while handling an outage stays a bug: exit 70, not a retried exit 4.
        vendor = type(current).__module__.partition(".")[0] in _VENDOR_WRAPPERS
        current = current.__cause__ or (current.__context__ if vendor else None)
    return chain


def is_outage(exc: BaseException) -> bool:
    """True when ``exc``, or an exception it was raised from, is a connection-level failure."""
    types = tuple(
        kind for module, name in _OUTAGE_TYPES if isinstance(kind := getattr(sys.modules.get(module), name, None), type)
    )
    grpc = sys.modules.get("grpc")
    for link in _exception_chain(exc):
        if isinstance(link, BrokenPipeError):  # our own stdout closed (`| head`): not a service
            return False
        if types and isinstance(link, types):
            return True
        if getattr(link, "connection_invalidated", False):  # SQLAlchemy: the connection dropped
            return True
        if grpc is not None and isinstance(link, grpc.RpcError):
            code = getattr(link, "code", None)
            if callable(code) and getattr(code(), "name", None) in _GRPC_OUTAGE_CODES:
                return True
    return False


def unexpected(exc: BaseException, internal_hint: str = INTERNAL_HINT) -> Failure:
    """The failure of an exception that is not a HokusaiError: 4 for an outage that escaped an adapter
    raw, else 70 (a bug: retrying will not help)."""
    lines = str(exc).strip().splitlines()
    detail = lines[0].strip() if lines else "no detail"
    if len(detail) > _MAX_DETAIL:
        detail = detail[:_MAX_DETAIL] + "..."
    if is_outage(exc):
        message = SERVICE_OUTAGE.format(kind=type(exc).__name__, detail=detail)
        return Failure(EXIT_SERVICE_UNAVAILABLE, "service_unavailable", message, SERVICE_OUTAGE_HINT)
    message = INTERNAL_ERROR.format(kind=type(exc).__name__, detail=detail)
    return Failure(EXIT_INTERNAL, "internal", message, internal_hint)


def unexpected_failure(exc: BaseException, internal_hint: str = INTERNAL_HINT) -> tuple[str, int]:
    """The one line and exit code of ``unexpected(exc)``."""
    failure = unexpected(exc, internal_hint)
    return failure.line(), failure.exit_code


def install_sigterm_handler() -> None:
    """`docker stop` and CI cancellations send SIGTERM: turn it into SystemExit so a claim is released."""
    import signal

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def handles_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a HokusaiError into one clear line and its exit code, anything else into exit 70 (a bug)
    or 4 (a raw connection failure); tracebacks only under --debug. With ``--output json`` the
    failure is also the one JSON object on stdout (``Failure.as_json``)."""

    @click.option("--debug", is_flag=True, help="Print the (redacted) traceback of a failure.")
    @functools.wraps(command)
    def wrapper(*args: Any, debug: bool = False, **kwargs: Any) -> Any:
        import logging

        logging.basicConfig(level=logging.INFO if debug else logging.WARNING, format="%(levelname)s %(message)s")
        install_log_redaction()
        install_sigterm_handler()
        json_output = kwargs.get("output") == "json"
        try:
            return command(*args, **kwargs)
        except HokusaiError as exc:
            if debug:
                click.echo(redact(traceback.format_exc()), err=True)
            exit_with_failure(Failure.of(exc), json_output=json_output)
        except KeyboardInterrupt:
            interrupted = Failure(EXIT_INTERRUPTED, "interrupted", INTERRUPTED, INTERRUPTED_HINT)
            exit_with_failure(interrupted, json_output=json_output)
        except Exception as exc:
            if debug:
                click.echo(redact(traceback.format_exc()), err=True)
            exit_with_failure(unexpected(exc), json_output=json_output)

    return wrapper


def _settings(**flags: Any) -> Any:
    from hokusai_action.settings.loader import load_settings
    from hokusai_action.vendors import quiet_vendor_logs

    quiet_vendor_logs()
    return load_settings(flags)


def _emit(data: Any, output: str, text: str) -> None:
    if output == "json":
        click.echo(json.dumps(data, sort_keys=True, default=str))
    else:
        click.echo(text)


output_option = click.option(
    "--output",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help=(
        'json: exactly one JSON object on stdout on every exit: the result (exit 0, 1, 5), or {"error": '
        '{"exit_code", "kind", "message", "hint"}} (exit 2, 3, 4, 70); human text goes to stderr.'
    ),
)
config_option = click.option(
    "--config",
    type=click.Path(dir_okay=False),
    help="Path of hokusai.yaml (default ./hokusai.yaml when present).",
)
database_option = click.option(
    "--database-url",
    envvar=None,
    help="SQLAlchemy URL of the Hokusai database (prefer HOKUSAI_DATABASE_URL).",
)


USAGE_HINT = "Run '{command} --help' for the options and an example."
DOCTOR_FAILED = "doctor found {count} problem{s}: {name}: {detail}"
MAX_SECONDS_WITHOUT_FOLLOW = "--max-seconds bounds a relay that follows (--follow); a single pass ends by itself."


class OneLineErrors(click.Group):
    """Click's own usage errors (an unknown option, a missing value) as one line and exit 2, like ours.

    Click prints usage, a hint and the error on three or four lines; a CI log reader wants the one
    line that says what failed and what to do.
    """

    def main(self, args: Any = None, prog_name: str | None = None, **extra: Any) -> Any:  # type: ignore[override]
        extra.pop("standalone_mode", None)
        json_output = asks_for_json(sys.argv[1:] if args is None else list(args))
        try:
            code = super().main(args=args, prog_name=prog_name, standalone_mode=False, **extra)
        except click.UsageError as exc:
            command = exc.ctx.command_path if exc.ctx is not None else "hokusai-ml-platform"
            usage = Failure(exc.exit_code, "usage", exc.format_message(), USAGE_HINT.format(command=command))
            exit_with_failure(usage, json_output=json_output)
        except click.ClickException as exc:  # a file option that cannot be opened, for instance
            exit_with_failure(Failure(exc.exit_code, "usage", exc.format_message()), json_output=json_output)
        except click.Abort:
            exit_with_failure(Failure(1, "aborted", "Aborted."), json_output=json_output)
        sys.exit(code if isinstance(code, int) else 0)


def run() -> None:
    """The ``hokusai-ml-platform`` program (console script, ``python -m``): ``main`` in a process
    paced for one short command (``hokusai_action.process``)."""
    from hokusai_action.process import short_command

    with short_command():
        main(prog_name="hokusai-ml-platform")


@click.group(cls=OneLineErrors, context_settings=CONTEXT)
@click.version_option(__version__, prog_name="hokusai-ml-platform")
def main() -> None:
    """Register a model trained for a Hokusai token: MLflow registry, Hokusai database,
    metric gate and the token_ready_for_deploy event.

    \b
    Example:
      hokusai-ml-platform db upgrade
      hokusai-ml-platform token create XRAY
      hokusai-ml-platform model register --token-id XRAY \\
          --model-path ./checkpoints/final --metric auroc --baseline 0.82
    """


# ------------------------------------------------------------------------------------------ model


@main.group(context_settings=CONTEXT)
def model() -> None:
    """Register models.

    \b
    Example:
      hokusai-ml-platform model register --token-id XRAY --model-path ./model --metric auroc --baseline 0.82
    """


@model.command("register", context_settings=CONTEXT)
@click.option("--token-id", help="Token symbol, e.g. XRAY (stored upper-case).")
@click.option("--model-path", help="File or directory of the trained model.")
@click.option("--metric", help="Metric name or alias: auroc, accuracy, f1, rmse, ... (docs/reference/metrics.md).")
@click.option("--baseline", help="Value the metric must meet or beat (finite, inside the metric's range).")
@click.option("--metric-value", help="The measured value, when it is not read from a metrics file.")
@click.option("--metrics-file", help="JSON/YAML mapping of metric name to value (default: metrics.json in the model).")
@click.option("--predictions", help="CSV or JSON Lines of labels and scores: the metric is computed from it.")
@click.option("--label-column", help="Label column of --predictions (default: label).")
@click.option("--score-column", help="Score/prediction column of --predictions (default: score, else prediction).")
@click.option("--positive-label", help="Label value counted as positive in --predictions (default: 1/true).")
@click.option("--mlflow-run-id", help="Take the metric logged in this MLflow run (its latest step).")
@click.option("--min-improvement", help="Margin over the baseline/champion: absolute (0.01) or relative (2%).")
@click.option("--compare-to", help="Also beat the version holding this alias of hokusai-<TOKEN> (e.g. champion).")
@click.option("--set-alias", help="Move this alias to the new version after success.")
@config_option
@click.option("--dry-run", is_flag=True, default=None, help="Validate and contact services read-only; change nothing.")
@click.option("--mlflow-tracking-uri", help="MLflow server or store (default: MLFLOW_TRACKING_URI, then .hokusai/).")
@database_option
@click.option("--event-sinks", help="Comma list of pubsub, webhook, database (default: database).")
@click.option(
    "--sign",
    type=click.Choice(["none", "key", "certificate", "sigstore"]),
    default=None,
    help="Sign the model files and the registration statement with model-signing (default: none).",
)
@click.option("--signing-key", help="PEM EC private key file for --sign key/certificate (or HOKUSAI_SIGNING_KEY=PEM).")
@click.option(
    "--signing-certificate-chain",
    multiple=True,
    help="PEM file(s) for --sign certificate: the key's certificate first, then intermediates (repeatable).",
)
@click.option("--quiet", is_flag=True, help="Show no progress while a big model is hashed or uploaded.")
@output_option
@handles_errors
def register_command(output: str, quiet: bool, **flags: Any) -> None:
    """Upload, gate and register a model for a draft token, then announce it.

    The measured value comes from one of --metric-value, --metrics-file, --predictions or
    --mlflow-run-id (default: metrics.json or metrics.yaml inside the model directory).

    Exit codes: 0 registered (or already registered with the same bytes), 1 metric below baseline,
    2 bad input or settings, 3 token state forbids it, 4 a service unreachable, 5 registered but an
    event is still undelivered, 70 internal error (a bug: re-run with --debug and report it).

    With --output json the result is printed on exit 0, 5 and 1: a model the gate refused is reported
    with status "rejected", its gate report under "metric" and nothing registered (mlflow_run_id,
    model_version, model_uri and event_id null). Exits 2, 3, 4 and 70 print the error object.

    \b
    Example:
      hokusai-ml-platform model register --token-id XRAY \\
          --model-path ./checkpoints/final --metric auroc --baseline 0.82 --output json
      hokusai-ml-platform model register --token-id XRAY --model-path ./model \\
          --metric auroc --baseline 0.82 --sign key --signing-key signing-key.pem
    """
    from hokusai_action.digest.background import prefetch_digest

    flags["signing_certificate_chain"] = tuple(flags.get("signing_certificate_chain") or ()) or None
    settings = _settings(**flags)
    # a re-run's wall time is its hash (2 GiB: ~1.1 s): start it before the ~0.3 s of imports below
    prefetched = prefetch_digest(settings.model_path)
    from hokusai_action.commands.register import print_result, run_register

    result, code = run_register(settings, quiet=quiet, prefetched=prefetched)
    print_result(result, output=output, stdout=sys.stdout, stderr=sys.stderr)
    if result.refusal is not None:  # the gate's report is the result (status rejected); then its line
        _fail(result.refusal.one_line(), code)
    sys.exit(code)


@model.command("verify", context_settings=CONTEXT)
@click.option("--token-id", required=True, help="Token symbol whose registered version to check.")
@click.option("--version", help="MLflow version to check (default: the token row's version).")
@click.option("--public-key", help="PEM public key: verify signatures made with --sign key.")
@click.option(
    "--certificate-chain", multiple=True, help="PEM root/intermediate certificates: verify --sign certificate."
)
@click.option("--identity", help="Signer identity for keyless (sigstore) signatures; needs --issuer.")
@click.option("--issuer", help="OIDC issuer of --identity, e.g. https://token.actions.githubusercontent.com.")
@click.option("--model-path", help="Check this local copy instead of downloading the version.")
@config_option
@click.option("--mlflow-tracking-uri", help="MLflow server or store (default: MLFLOW_TRACKING_URI, then .hokusai/).")
@database_option
@output_option
@handles_errors
def verify_command(
    output: str,
    token_id: str,
    version: str | None,
    public_key: str | None,
    certificate_chain: tuple[str, ...],
    identity: str | None,
    issuer: str | None,
    model_path: str | None,
    **flags: Any,
) -> None:
    """Check a registered version: its bytes, tags, token row, event and (given a key) signatures.

    Downloads the version (streamed to a temporary folder), recomputes the artifact digest and compares
    it with the version's tag, the token row and the event; compares what those record with each other;
    with --public-key, --certificate-chain or --identity/--issuer verifies the model and statement
    signatures (an unsigned registration then fails). Exit 0 verified, 1 the first mismatch (named in
    the error line), 2 bad input, 3 token missing or not registered, 4 MLflow or the database unreachable.

    \b
    Example:
      hokusai-ml-platform model verify --token-id XRAY --public-key signing-key.pub --output json
      hokusai-ml-platform model verify --token-id XRAY --version 3 --certificate-chain ca.pem
    """
    from hokusai_action.commands.register import describe_verify, run_verify

    settings = _settings(**flags)
    report, code = run_verify(
        settings,
        token_id=token_id,
        version=version,
        model_path=model_path,
        public_key=public_key,
        certificate_chain=tuple(certificate_chain),
        identity=identity,
        issuer=issuer,
        progress=lambda line: click.echo(line, err=True),
    )
    human = "\n".join(describe_verify(report))
    if output == "json":
        click.echo(human, err=True)
        click.echo(json.dumps(report.as_dict(), sort_keys=True))
    elif report.verified:
        click.echo(human)
    else:
        click.echo(human, err=True)
    if code:
        _fail(f"verification failed: {report.error}", code)


# --------------------------------------------------------------------------------------------- db


@main.group(context_settings=CONTEXT)
def db() -> None:
    """Manage the Hokusai database schema.

    \b
    Example:
      HOKUSAI_DATABASE_URL=postgresql+psycopg2://hokusai@db/hokusai hokusai-ml-platform db upgrade
    """


@db.command("upgrade", context_settings=CONTEXT)
@config_option
@database_option
@handles_errors
def db_upgrade(**flags: Any) -> None:
    """Create or migrate the tokens and events tables to the newest revision (idempotent).

    \b
    Example:
      hokusai-ml-platform db upgrade
    """
    from hokusai_action.commands.register import run_db_upgrade

    click.echo(run_db_upgrade(_settings(**flags)))


# ------------------------------------------------------------------------------------------ token


@main.group(context_settings=CONTEXT)
def token() -> None:
    """Create, inspect and reset tokens (the site creates them in production).

    \b
    Example:
      hokusai-ml-platform token create XRAY && hokusai-ml-platform token show XRAY
    """


@token.command("create", context_settings=CONTEXT)
@click.argument("symbol")
@click.option("--metadata", help="JSON object stored in the token's metadata column.")
@config_option
@database_option
@output_option
@handles_errors
def token_create(symbol: str, metadata: str | None, output: str, **flags: Any) -> None:
    """Create a draft token SYMBOL (for local use and tests).

    \b
    Example:
      hokusai-ml-platform token create XRAY --metadata '{"owner": "radiology"}'
    """
    from hokusai_action.commands.register import run_token_create
    from hokusai_action.errors import InputError

    parsed = None
    if metadata:
        try:
            parsed = json.loads(metadata)
        except ValueError as exc:
            raise InputError(f"--metadata is not valid JSON: {exc}.") from exc
        if not isinstance(parsed, dict):
            raise InputError('--metadata must be a JSON object, e.g. \'{"owner": "me"}\'.')
    created = run_token_create(_settings(**flags), symbol, parsed)
    _emit(created, output, f"Token {created['token_id']} created (draft).")


@token.command("show", context_settings=CONTEXT)
@click.argument("symbol")
@config_option
@database_option
@output_option
@handles_errors
def token_show(symbol: str, output: str, **flags: Any) -> None:
    """Show a token's status, registration and event delivery.

    \b
    Example:
      hokusai-ml-platform token show XRAY --output json
    """
    from hokusai_action.commands.register import run_token_show

    shown = run_token_show(_settings(**flags), symbol)
    lines = [f"{key:18} {value}" for key, value in shown.items() if key != "event_deliveries"]
    lines += [f"{'delivery':18} {_delivery_line(delivery)}" for delivery in shown.get("event_deliveries", [])]
    _emit(shown, output, "\n".join(lines))


def _delivery_line(delivery: dict[str, Any]) -> str:
    """One delivery row in words: a pass is one try by the registration or a relay, which a sink may
    make of several attempts of its own (a webhook's "after 5/5 attempts" in the last error)."""
    status = delivery["status"]
    if status == "cancelled":
        return f"{delivery['sink']}: cancelled, never sent ({delivery.get('cancel_reason')})"
    shown = "failed (a dead letter)" if status == "failed" else status
    line = f"{delivery['sink']}: {shown} after {delivery['attempts']} delivery pass(es)"
    if status == "pending" and delivery.get("next_attempt_at"):
        line += f"; next pass from {delivery['next_attempt_at']}"
    if delivery.get("last_error"):
        line += f" (last error: {delivery['last_error']})"
    return line


@token.command("reset", context_settings=CONTEXT)
@click.argument("symbol")
@config_option
@database_option
@output_option
@handles_errors
def token_reset(symbol: str, output: str, **flags: Any) -> None:
    """Set token SYMBOL back to draft, as the site's reset does, and print what was cleared.

    Clears the registration (MLflow run, metric and baseline, model name/version/URI, digest,
    claim, event id) and keeps the event history. The registration is withdrawn: every delivery of
    the token's events not yet made (pending or dead-lettered) is cancelled, with the reason, and
    listed; no relay sends it and `events retry` refuses it. The next registration is a new one: the
    same bytes reuse their MLflow version and send a new event (a new id, even after the site prunes
    old events). Refused (exit 3), changing nothing, while a run holds the token's claim or a relay is
    sending one of its events (a sent event cannot be called back: reset once it has arrived).

    \b
    Example:
      hokusai-ml-platform token reset XRAY --output json
    """
    from hokusai_action.commands.register import describe_reset, run_token_reset

    reset = run_token_reset(_settings(**flags), symbol)
    _emit(reset, output, "\n".join(describe_reset(reset)))


# ----------------------------------------------------------------------------------------- events


@main.group(context_settings=CONTEXT)
def events() -> None:
    """Deliver token_ready_for_deploy events.

    \b
    Example:
      HOKUSAI_EVENT_SINKS=pubsub,database hokusai-ml-platform events relay
    """


@events.command("relay", context_settings=CONTEXT)
@click.option("--event-id", help="Deliver only this event (default: every pending one).")
@click.option(
    "--follow",
    is_flag=True,
    help="Keep delivering as events arrive (LISTEN on PostgreSQL, polling on SQLite) until SIGTERM/Ctrl-C.",
)
@click.option(
    "--interval",
    type=FiniteFloatRange(min=0.1, max=3600),
    default=5.0,
    show_default=True,
    help="With --follow: the longest wait between passes (the safety poll under LISTEN; the polling cap).",
)
@click.option(
    "--max-seconds",
    type=FiniteFloatRange(min=0, min_open=True, max=86400 * 366),
    help="With --follow: stop after this many seconds; exit 0, or 5 if deliveries are left.",
)
@config_option
@database_option
@click.option("--event-sinks", help="Comma list of pubsub, webhook, database (default: database).")
@output_option
@handles_errors
def events_relay(
    event_id: str | None, follow: bool, interval: float, max_seconds: float | None, output: str, **flags: Any
) -> None:
    """Deliver pending events to the configured sinks; exit 5 while any is still pending or dead-lettered.

    A delivery that failed permanently (webhook 4xx, Pub/Sub topic missing or forbidden) is a dead
    letter: it is skipped and named until `events retry` re-queues it. An event whose registration
    its token no longer holds (the token was reset) is never sent: its delivery is cancelled, with the
    reason, and listed.

    A delivery that failed transiently is retried after a backoff (about 1 s, doubling up to 10 min).
    A single pass waits out backoffs that end within 10 s (the sink was just fixed) and names the
    next one due after that, with when; --event-id sends that event at once, whatever its backoff.

    With --follow the relay runs as a service: on PostgreSQL it LISTENs for the NOTIFY each
    registration's commit sends and delivers at once (and passes over the table every --interval,
    since a NOTIFY sent while it was not listening is lost); on SQLite it polls, every 0.1 s after
    a delivery, doubling while idle up to --interval. It prints a report line only when a pass moved
    or found something. SIGTERM or Ctrl-C stops it cleanly: each delivery in hand is finished and
    recorded, the rest handed back to other relays, exit 0. --max-seconds N stops it after N seconds
    with the exit code of a single pass (0, or 5 if anything is still pending or dead-lettered).
    Any number of relays, on any machines, can follow one database: each delivery is leased by one,
    which renews the lease while it sends (a killed relay's deliveries wait HOKUSAI_RELAY_LEASE, 120 s).

    \b
    Example:
      hokusai-ml-platform events relay --event-id 0b6f3c1e-...
      HOKUSAI_EVENT_SINKS=webhook,database hokusai-ml-platform events relay --follow
      hokusai-ml-platform events relay --follow --max-seconds 60   # in a CI job
    """
    from hokusai_action.commands.register import describe_relay, run_events_relay
    from hokusai_action.errors import InputError

    if max_seconds is not None and not follow:
        raise InputError(MAX_SECONDS_WITHOUT_FOLLOW)
    settings = _settings(**flags)
    if not follow:
        summary, code = run_events_relay(settings, event_id=event_id)
        _emit(summary, output, "\n".join(describe_relay(summary)))
        sys.exit(code)
    sys.exit(_follow(settings, event_id=event_id, interval=interval, max_seconds=max_seconds, output=output))


def _follow(settings: Any, *, event_id: str | None, interval: float, max_seconds: float | None, output: str) -> int:
    """Run the following relay with SIGTERM and SIGINT turned into a clean stop (exit 0)."""
    import signal

    from hokusai_action.commands.register import StopRequest, describe_relay, run_events_follow

    stop = StopRequest()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda number, _frame: stop.request(number))

    def on_error(exc: HokusaiError, retry_in: float) -> None:
        # a database outage ends one pass, not the relay: it tries again
        click.echo(f"error: {one_line(redact(exc.one_line()))} (trying again in {retry_in:g} s)", err=True)

    def on_pass(summary: dict[str, Any]) -> None:
        _emit(summary, output, "\n".join(describe_relay(summary)))

    code = run_events_follow(
        settings,
        interval=interval,
        stop=stop,
        on_pass=on_pass,
        on_error=on_error,
        max_seconds=max_seconds,
        event_id=event_id,
    )
    if stop():
        click.echo(f"relay stopped by {signal.Signals(stop.signal or signal.SIGTERM).name}", err=True)
    return code


@events.command("retry", context_settings=CONTEXT)
@click.argument("event_id", required=False)
@click.option("--all-failed", is_flag=True, help="Re-queue every dead-lettered delivery.")
@config_option
@database_option
@output_option
@handles_errors
def events_retry(event_id: str | None, all_failed: bool, output: str, **flags: Any) -> None:
    """Put dead-lettered deliveries (failed permanently) back to pending, after fixing the cause.

    Then `events relay` delivers them, with the same event id. An event whose registration was
    withdrawn (its token was reset: its deliveries are cancelled) is refused with exit 3 and nothing
    changes; --all-failed cancels the dead letters of withdrawn registrations instead of re-queuing them.

    \b
    Example:
      hokusai-ml-platform events retry 0b6f3c1e-... && hokusai-ml-platform events relay
      hokusai-ml-platform events retry --all-failed
    """
    from hokusai_action.commands.register import describe_retry, run_events_retry

    summary, code = run_events_retry(_settings(**flags), event_id=event_id, all_failed=all_failed)
    _emit(summary, output, "\n".join(describe_retry(summary, event_id=event_id)))
    sys.exit(code)


# ----------------------------------------------------------------------------------------- doctor


@main.command(context_settings=CONTEXT)
@config_option
@click.option("--mlflow-tracking-uri", help="MLflow server or store to check.")
@database_option
@click.option("--event-sinks", help="Comma list of pubsub, webhook, database.")
@output_option
@handles_errors
def doctor(output: str, **flags: Any) -> None:
    """Check the settings and reach each service read-only: the database and its schema, MLflow, each
    event sink (a webhook gets a HEAD request, never an event) and the Google identities in use.

    Each check waits a few seconds at most, all side by side. A check fails wherever `model register`
    would fail, saying what to do, and doctor then exits with the code register would (2 settings,
    4 a service unreachable; the worst of them). With --output json: {"ok": ..., "checks": [{"check",
    "ok", "detail", "hint"}, ...]}, plus the error object of the worst failure.

    \b
    Example:
      hokusai-ml-platform doctor --output json
    """
    from hokusai_action.commands.register import run_doctor

    report = run_doctor(_settings(**flags))
    lines = []
    for check in report.checks:
        lines.append(f"{'ok  ' if check.ok else 'FAIL'} {check.name:9} {check.detail}")
        if not check.ok and check.hint:
            lines.append(f"{'':15}{check.hint}")
    if output == "json":
        click.echo("\n".join(lines), err=True)
        click.echo(json.dumps(report.as_dict(), sort_keys=True))
    else:
        click.echo("\n".join(lines))
    worst = report.worst
    if worst is not None:
        others = [check.name for check in report.failed if check is not worst]
        count = len(report.failed)
        line = DOCTOR_FAILED.format(count=count, s="" if count == 1 else "s", name=worst.name, detail=worst.detail)
        line += (f" {worst.hint}" if worst.hint else "") + (f" Also failed: {', '.join(others)}." if others else "")
        _fail(line, report.exit_code)


if __name__ == "__main__":  # pragma: no cover
    main()
