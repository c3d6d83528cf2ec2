"""GitHub's runner protocol, all of it, in one module (standard library only).

What the runner reads from an action, and how each is written here:

- inputs arrive as ``INPUT_<NAME>`` environment variables (name upper-cased, hyphens kept);
- outputs are appended to the file named by ``$GITHUB_OUTPUT``: ``name=value`` for one line, the
  ``name<<DELIMITER`` / value / ``DELIMITER`` form for several;
- the job summary is Markdown appended to ``$GITHUB_STEP_SUMMARY``;
- annotations and masks are workflow commands printed on stdout (``::error title=..::message``,
  ``::add-mask::value``), with ``%``, CR and LF escaped in the data and also ``:`` and ``,`` in
  property values, because the runner splits properties on those characters.

Reference: https://docs.github.com/en/actions/reference/workflows-and-actions/workflow-commands
Nothing here knows about MLflow, the database or events; the action (``hokusai_action.action``) feeds
it the result.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Mapping
from typing import Any, TextIO
from urllib.parse import quote, urlsplit, urlunsplit

from hokusai_action.redact import redact

ANNOTATION_KINDS = frozenset({"error", "warning", "notice"})

# action output name -> key of the ``--output json`` result (DESIGN.md, "GitHub Action")
OUTPUT_FIELDS: dict[str, str] = {
    "mlflow-run-id": "mlflow_run_id",
    "model-name": "model_name",
    "model-version": "model_version",
    "model-uri": "model_uri",
    "metric-value": "metric.value",
    "status": "status",
    "event-id": "event_id",
}

_INPUT_PREFIX = "INPUT_"
_DELIMITER_PREFIX = "ghadelimiter_"


# --------------------------------------------------------------------------------------------- runner


def on_github(environ: Mapping[str, str] | None = None) -> bool:
    """True when running as a GitHub Actions step (the runner sets ``GITHUB_ACTIONS=true``)."""
    env = os.environ if environ is None else environ
    return env.get("GITHUB_ACTIONS") == "true"


def read_inputs(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The action's inputs, keyed by their kebab-case name (``token-id``).

    The runner upper-cases the input name and keeps its hyphens (``INPUT_TOKEN-ID``); the
    underscore spelling (``INPUT_TOKEN_ID``, handy under ``docker run -e``) is accepted too, and the
    hyphenated one wins when both are set. Surrounding whitespace is stripped and an empty value
    means "not given": the runner exports every declared input, given or not.
    """
    env = os.environ if environ is None else environ
    found: dict[str, tuple[bool, str]] = {}  # name -> (came from the hyphenated spelling, value)
    for key, raw in env.items():
        if not key.startswith(_INPUT_PREFIX):
            continue
        suffix = key[len(_INPUT_PREFIX) :]
        name = suffix.lower().replace("_", "-")
        value = raw.strip()
        if not name or not value:
            continue
        hyphenated = "-" in suffix or "_" not in suffix
        previous = found.get(name)
        if previous is None or (hyphenated and not previous[0]):
            found[name] = (hyphenated, value)
    return {name: value for name, (_, value) in sorted(found.items())}


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def add_mask(value: str | None, stream: TextIO | None = None) -> None:
    """Ask the runner to mask ``value`` in every later log line.

    The runner masks line by line, so a multi-line secret (a PEM key) is registered one line at a
    time; empty lines are skipped because masking "" would be meaningless.
    """
    if not value:
        return
    out = sys.stdout if stream is None else stream
    for line in value.splitlines():
        if line.strip():
            out.write(f"::add-mask::{_escape_data(line)}\n")
    out.flush()


def annotation(
    kind: str,
    message: str,
    *,
    title: str | None = None,
    file: str | None = None,
    line: int | None = None,
    stream: TextIO | None = None,
) -> str:
    """Print an ``error``/``warning``/``notice`` annotation and return the command line printed.

    Message and title go through ``redact`` first: an annotation is shown on the run's page to
    everyone who can read the repository.
    """
    if kind not in ANNOTATION_KINDS:
        raise ValueError(f"annotation kind must be one of {sorted(ANNOTATION_KINDS)}, not {kind!r}")
    properties: list[str] = []
    if file:
        properties.append(f"file={_escape_property(redact(file))}")
    if line is not None:
        properties.append(f"line={int(line)}")
    if title:
        properties.append(f"title={_escape_property(redact(title))}")
    head = f"::{kind} {','.join(properties)}" if properties else f"::{kind}"
    command = f"{head}::{_escape_data(redact(message))}"
    out = sys.stdout if stream is None else stream
    out.write(command + "\n")
    out.flush()
    return command


def _target_file(path: str | os.PathLike[str] | None, variable: str) -> str | os.PathLike[str] | None:
    """An explicit ``path`` always wins; otherwise ``$variable``, and only on GitHub."""
    if path is not None:
        return path
    if not on_github():
        return None
    return os.environ.get(variable) or None


def format_output_value(value: Any) -> str:
    """How a Python value is written as an output: booleans as ``true``/``false``, the rest by ``str``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _output_record(name: str, value: str) -> str:
    if not name or "=" in name or "<<" in name or "\n" in name or "\r" in name:
        raise ValueError(f"invalid output name {name!r}")
    if "\n" not in value and "\r" not in value:
        return f"{name}={value}\n"
    # The runner ends the value at the first line equal to the delimiter, so pick one that does not
    # occur in the value (a random UUID cannot realistically, but check rather than hope).
    delimiter = f"{_DELIMITER_PREFIX}{uuid.uuid4()}"
    while delimiter in value:
        delimiter = f"{_DELIMITER_PREFIX}{uuid.uuid4()}"
    return f"{name}<<{delimiter}\n{value}\n{delimiter}\n"


def set_outputs(mapping: Mapping[str, Any], path: str | os.PathLike[str] | None = None) -> bool:
    """Append ``mapping`` to ``$GITHUB_OUTPUT`` (or ``path``); ``None`` values are skipped.

    Does nothing, and returns False, when no path is given and the process is not a GitHub step or
    the runner set no ``GITHUB_OUTPUT``: under ``docker run`` the JSON result is the output.
    """
    target = _target_file(path, "GITHUB_OUTPUT")
    if target is None:
        return False
    records = [_output_record(name, format_output_value(value)) for name, value in mapping.items() if value is not None]
    with open(target, "a", encoding="utf-8", newline="\n") as handle:
        handle.write("".join(records))
    return True


def write_summary(markdown: str, path: str | os.PathLike[str] | None = None) -> bool:
    """Append ``markdown`` (redacted) to ``$GITHUB_STEP_SUMMARY`` (or ``path``); False when there is none."""
    target = _target_file(path, "GITHUB_STEP_SUMMARY")
    if target is None:
        return False
    text = redact(markdown)
    if not text.endswith("\n"):
        text += "\n"
    with open(target, "a", encoding="utf-8", newline="\n") as handle:
        handle.write(text)
    return True


# ----------------------------------------------------------------------------------------- reporting


def _lookup(result: Mapping[str, Any], dotted: str) -> Any:
    value: Any = result
    for part in dotted.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def outputs_from_result(result: Mapping[str, Any]) -> dict[str, str | None]:
    """The action outputs for a ``--output json`` result; a missing field gives ``None`` (not set)."""
    outputs: dict[str, str | None] = {}
    for output_name, field_path in OUTPUT_FIELDS.items():
        value = _lookup(result, field_path)
        outputs[output_name] = None if value is None else format_output_value(value)
    return outputs


def escape_cell(value: Any) -> str:
    """Text safe inside one Markdown table cell: ``|`` escaped, line breaks turned into ``<br>``."""
    text = "" if value is None else str(value)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.replace("|", "\\|").replace("\n", "<br>")


def _code(value: Any) -> str:
    """``value`` as an inline code span, unless it holds a backtick (then as escaped text)."""
    if value is None or value == "":
        return "—"
    text = str(value)
    if "`" in text or "\n" in text or "\r" in text:
        return escape_cell(text)
    return f"`{escape_cell(text)}`"


def _link(label: str, url: str | None) -> str:
    return f"[{label}]({url})" if url else label


def _web_base(tracking_uri: str | None) -> str | None:
    """The MLflow UI base for an http(s) tracking URI, without credentials, query or fragment."""
    if not tracking_uri:
        return None
    try:
        parts = urlsplit(tracking_uri)
        port = parts.port
    except ValueError:  # an unparsable URI or port: no link rather than a broken one
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = f"{host}:{port}" if port else host
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def _format_number(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    return "—" if value is None else str(value)


def _metric_cell(metric: Mapping[str, Any] | None) -> str:
    if not metric:
        return "—"
    name, value, baseline = metric.get("name"), metric.get("value"), metric.get("baseline")
    greater = metric.get("greater_is_better", True)
    label = _code(name)
    if value is None:
        return f"{label} (not measured)"
    if baseline is None:
        return f"{label} = {escape_cell(_format_number(value))}"
    sign = "≥" if greater else "≤"
    passed = metric.get("passed")
    if passed is None:
        try:
            passed = value >= baseline if greater else value <= baseline
        except TypeError:
            passed = None
    verdict = {True: "✅ pass", False: "❌ fail", None: "?"}[passed]
    return (
        f"{label} = {escape_cell(_format_number(value))} {sign} "
        f"{escape_cell(_format_number(baseline))} (baseline) — {verdict}"
    )


def _gate_cell(metric: Mapping[str, Any] | None) -> str | None:
    """The rest of the gate report: required value, delta, margin, champion, where the value came from."""
    if not metric or metric.get("required") is None:
        return None
    parts = [f"required {_format_number(metric['required'])}"]
    if metric.get("delta") is not None:
        parts.append(f"delta {metric['delta']:+.6g}")
    if metric.get("margin"):
        parts.append(f"margin {metric['margin']}")
    champion = metric.get("champion")
    if champion:
        held = (
            f"version {champion.get('version')} = {_format_number(champion.get('value'))}"
            if champion.get("version")
            else "held by no version (baseline decides)"
        )
        parts.append(f"champion '{champion.get('alias')}' {held}")
    if metric.get("source"):
        parts.append(
            f"source {metric['source']}" + (f" ({metric['source_detail']})" if metric.get("source_detail") else "")
        )
    parts.extend(metric.get("notes") or [])
    return escape_cell("; ".join(parts))


def _delivery_cell(delivered: Any) -> str:
    pending = "⏳ pending — re-run or `hokusai-ml-platform events relay`"
    if delivered is None:
        return "—"
    if isinstance(delivered, bool):
        return "✅ delivered" if delivered else pending
    if isinstance(delivered, Mapping):  # per sink: {"pubsub": true, "webhook": false}
        parts = [f"{escape_cell(sink)} {'✅' if ok else '⏳'}" for sink, ok in delivered.items()]
        return ", ".join(parts) if parts else "—"
    if isinstance(delivered, list | tuple | set):
        return ", ".join(escape_cell(sink) for sink in delivered) or "none"
    return escape_cell(delivered)


def _upload_cell(upload: Mapping[str, Any]) -> str:
    """Size, files, duration and throughput of what this run uploaded: ``2.0 GiB, 1 file in 13.1 s (156 MiB/s)``."""
    nbytes, files, seconds = (
        int(upload.get("bytes") or 0),
        int(upload.get("files") or 0),
        float(upload.get("seconds") or 0),
    )
    size, rate = _binary_size(nbytes), _binary_size(nbytes / seconds if seconds > 0 else 0)
    return escape_cell(f"{size}, {files:,} file{'' if files == 1 else 's'} in {seconds:.1f} s ({rate}/s)")


def _binary_size(nbytes: float) -> str:
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return (
                f"{int(value)} B" if unit == "B" else f"{value:.0f} {unit}" if value >= 100 else f"{value:.1f} {unit}"
            )
        value /= 1024
    return f"{value:.1f} TiB"


def summary_markdown(result: Mapping[str, Any], tracking_uri: str | None = None) -> str:
    """The step summary: one Markdown table built from the ``--output json`` result.

    With an http(s) ``tracking_uri`` the model version links to the MLflow UI
    (``{base}/#/models/{name}/versions/{version}``); credentials in the URI are never shown.
    """
    dry_run = bool(result.get("dry_run"))
    status = result.get("status")
    heading = "Hokusai model registration" + (" (dry run — nothing changed)" if dry_run else "")

    base = _web_base(tracking_uri)
    model_name, model_version = result.get("model_name"), result.get("model_version")
    version_url = None
    if base and model_name and model_version is not None:
        name_part, version_part = quote(str(model_name), safe=""), quote(str(model_version), safe="")
        version_url = f"{base}/#/models/{name_part}/versions/{version_part}"

    if model_name and model_version is not None:
        version_cell = _link(f"{escape_cell(model_name)} v{escape_cell(model_version)}", version_url)
    elif model_name:
        version_cell = escape_cell(model_name)
    else:
        version_cell = "—"

    rows = [
        ("Token", _code(result.get("token_id"))),
        ("Status", _code(status)),
        ("Metric", _metric_cell(result.get("metric"))),
        ("Gate", _gate_cell(result.get("metric")) or "—"),
        ("MLflow run", _code(result.get("mlflow_run_id"))),
        ("Model version", version_cell),
        ("Model URI", _code(result.get("model_uri"))),
        ("Artifact digest", _code(result.get("artifact_digest"))),
        ("Event id", _code(result.get("event_id"))),
        ("Event delivery", _delivery_cell(result.get("events_delivered"))),
        ("Dry run", "yes" if dry_run else "no"),
    ]
    if result.get("upload"):
        rows.insert(8, ("Upload", _upload_cell(result["upload"])))
    lines = [f"### {heading}", "", "| | |", "|---|---|"]
    lines += [f"| {label} | {cell} |" for label, cell in rows]
    return redact("\n".join(lines) + "\n")


def failure_summary(error_title: str, line: str) -> str:
    """The step summary of a failed run: what kind of failure, and the one line saying what to do."""
    title = escape_cell(error_title).replace("<br>", " ")
    body = "\n".join(f"> {part}" for part in (line or "").splitlines()) or "> (no details)"
    return redact(f"### ❌ Hokusai registration failed: {title}\n\n{body}\n")
