"""``model register`` and ``model verify``."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from hokusai_action.cli.boundary import fail, handles_errors
from hokusai_action.cli.options import (
    CONTEXT,
    config_option,
    database_option,
    output_option,
    settings_from_flags,
    tracking_uri_option,
)
from hokusai_action.settings.table import SIGN_METHODS


@click.group(context_settings=CONTEXT)
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
@tracking_uri_option
@database_option
@click.option("--event-sinks", help="Comma list of pubsub, webhook, database (default: database).")
@click.option(
    "--sign",
    type=click.Choice(SIGN_METHODS),
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
    settings = settings_from_flags(**flags)
    # a re-run's wall time is its hash (2 GiB: ~1.1 s): start it before the ~0.3 s of imports below
    prefetched = prefetch_digest(settings.model_path)
    from hokusai_action.commands.register import print_result, run_register

    result, code = run_register(settings, quiet=quiet, prefetched=prefetched)
    print_result(result, output=output, stdout=sys.stdout, stderr=sys.stderr)
    if result.refusal is not None:  # the gate's report is the result (status rejected); then its line
        fail(result.refusal.one_line(), code)
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
@tracking_uri_option
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
    from hokusai_action.commands.verify import describe_verify, run_verify

    report, code = run_verify(
        settings_from_flags(**flags),
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
        fail(f"verification failed: {report.error}", code)
