"""GitHub runner protocol: what the runner would read back from what ``github.py`` writes."""

from __future__ import annotations

import io
import re
import uuid
from pathlib import Path

import pytest
import yaml

from hokusai_action import github
from hokusai_action import redact as redact_module
from tests.github_runner import parse_command, parse_output_file

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[2]

# DESIGN.md, "GitHub Action": the inputs and outputs users rely on
DESIGN_INPUTS = [
    "token-id",
    "model-path",
    "metric",
    "baseline",
    "metric-value",
    "metrics-file",
    "config",
    "dry-run",
    "mlflow-tracking-uri",
    "database-url",
    "event-sinks",
    "pubsub-topic",
    "webhook-url",
    "webhook-secret",
]
DESIGN_OUTPUTS = [
    "mlflow-run-id",
    "model-name",
    "model-version",
    "model-uri",
    "metric-value",
    "status",
    "event-id",
]
SECRET_INPUTS = ["database-url", "webhook-secret", "mlflow-tracking-token", "signing-key"]


@pytest.fixture
def github_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Path]:
    """A GitHub step's environment with fresh output and summary files."""
    paths = {"output": tmp_path / "github_output", "summary": tmp_path / "step_summary"}
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_OUTPUT", str(paths["output"]))
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(paths["summary"]))
    return paths


def make_result(**overrides: object) -> dict[str, object]:
    result: dict[str, object] = {
        "token_id": "XRAY",
        "status": "registered",
        "mlflow_run_id": "0a1b2c3d4e5f",
        "model_name": "hokusai-XRAY",
        "model_version": 3,
        "model_uri": "models:/hokusai-XRAY/3",
        "metric": {"name": "auroc", "value": 0.91, "baseline": 0.82, "greater_is_better": True},
        "artifact_digest": "sha256:" + "ab" * 32,
        "event_id": "5f0c7b1e-3a52-5e0c-9b8e-1d2f3a4b5c6d",
        "events_delivered": True,
        "dry_run": False,
    }
    result.update(overrides)
    return result


# ----------------------------------------------------------------------------------------- runner


def test_on_github_only_when_the_runner_says_so() -> None:
    assert github.on_github({"GITHUB_ACTIONS": "true"})
    assert not github.on_github({"GITHUB_ACTIONS": "false"})
    assert not github.on_github({})


def test_read_inputs_takes_hyphenated_and_underscore_names() -> None:
    environ = {
        "INPUT_TOKEN-ID": "  xray \n",
        "INPUT_MODEL_PATH": "./checkpoints/final",
        "INPUT_METRIC": "auroc",
        "INPUT_BASELINE": "",  # declared but not given
        "INPUT_WEBHOOK-URL": "   ",
        "INPUT_DRY-RUN": "false",
        "HOME": "/root",
        "GITHUB_TOKEN": "ghs_not_an_input",
    }
    assert github.read_inputs(environ) == {
        "token-id": "xray",
        "model-path": "./checkpoints/final",
        "metric": "auroc",
        "dry-run": "false",
    }


def test_read_inputs_prefers_the_runners_hyphenated_spelling() -> None:
    for environ in (
        {"INPUT_EVENT-SINKS": "pubsub", "INPUT_EVENT_SINKS": "webhook"},
        {"INPUT_EVENT_SINKS": "webhook", "INPUT_EVENT-SINKS": "pubsub"},
    ):
        assert github.read_inputs(environ) == {"event-sinks": "pubsub"}


def test_single_line_outputs_are_unquoted_name_value_lines(github_env: dict[str, Path]) -> None:
    assert github.set_outputs({"status": "registered", "model-version": 3, "dry-run": False})
    text = github_env["output"].read_text(encoding="utf-8")
    assert text == "status=registered\nmodel-version=3\ndry-run=false\n"
    assert parse_output_file(text) == {"status": "registered", "model-version": "3", "dry-run": "false"}


def test_none_values_are_skipped_and_writes_append(github_env: dict[str, Path]) -> None:
    github_env["output"].write_text("earlier=kept\n", encoding="utf-8")
    github.set_outputs({"event-id": None, "model-uri": "models:/hokusai-XRAY/3"})
    parsed = parse_output_file(github_env["output"].read_text(encoding="utf-8"))
    assert parsed == {"earlier": "kept", "model-uri": "models:/hokusai-XRAY/3"}


def test_multi_line_values_round_trip(github_env: dict[str, Path]) -> None:
    values = {
        "notes": "first line\nsecond = line\n\nfourth << line",
        "trailing": "ends with a newline\n",
        "lookalike": "EOF\nghadelimiter_\nnotes<<EOF\nx=y",
        "plain": "a=b<<c",
    }
    github.set_outputs(values)
    text = github_env["output"].read_text(encoding="utf-8")
    assert parse_output_file(text) == values
    assert "plain=a=b<<c\n" in text


def test_crlf_in_a_value_reads_back_as_lf(github_env: dict[str, Path]) -> None:
    github.set_outputs({"windows": "one\r\ntwo", "old-mac": "one\rtwo"})
    parsed = parse_output_file(github_env["output"].read_text(encoding="utf-8"))
    assert parsed == {"windows": "one\ntwo", "old-mac": "one\ntwo"}


def test_delimiter_never_occurs_in_the_value(github_env: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    colliding = uuid.UUID("00000000-0000-4000-8000-000000000001")
    fresh = uuid.UUID("00000000-0000-4000-8000-000000000002")
    choices = iter([colliding, fresh])
    monkeypatch.setattr(github.uuid, "uuid4", lambda: next(choices))
    value = f"line one\nghadelimiter_{colliding}\nline three"

    github.set_outputs({"tricky": value})

    text = github_env["output"].read_text(encoding="utf-8")
    assert text.startswith(f"tricky<<ghadelimiter_{fresh}\n")
    assert parse_output_file(text) == {"tricky": value}


def test_invalid_output_names_are_refused(github_env: dict[str, Path]) -> None:
    for name in ("a=b", "a<<b", "two\nlines", ""):
        with pytest.raises(ValueError, match="invalid output name"):
            github.set_outputs({name: "x"})


def test_outputs_and_summary_do_nothing_off_github(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    output, summary = tmp_path / "out", tmp_path / "summary"
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    monkeypatch.setenv("GITHUB_OUTPUT", str(output))
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))

    assert github.set_outputs({"status": "registered"}) is False
    assert github.write_summary("# hi") is False
    assert not output.exists()
    assert not summary.exists()

    # an explicit path is the caller's decision and is honoured anywhere
    assert github.set_outputs({"status": "registered"}, path=output)
    assert parse_output_file(output.read_text(encoding="utf-8")) == {"status": "registered"}


def test_outputs_do_nothing_without_a_github_output_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.delenv("GITHUB_OUTPUT", raising=False)
    assert github.set_outputs({"status": "registered"}) is False


def test_each_line_of_a_secret_is_masked() -> None:
    stream = io.StringIO()
    github.add_mask("-----BEGIN KEY-----\nAbC%0Adef\n\n-----END KEY-----\n", stream)
    commands = [parse_command(line) for line in stream.getvalue().splitlines()]
    assert commands == [
        ("add-mask", {}, "-----BEGIN KEY-----"),
        ("add-mask", {}, "AbC%0Adef"),  # a literal "%0A" is escaped, not turned into a newline
        ("add-mask", {}, "-----END KEY-----"),
    ]


def test_empty_secret_prints_nothing() -> None:
    stream = io.StringIO()
    github.add_mask("", stream)
    github.add_mask(None, stream)
    assert stream.getvalue() == ""


def test_annotation_escapes_data_and_properties() -> None:
    stream = io.StringIO()
    message = "100% sure\r\nsecond line: a, b"
    title = "Gate: auroc, 50%\nfailed"
    printed = github.annotation("error", message, title=title, file="models/a,b:c.py", line=7, stream=stream)

    assert stream.getvalue() == printed + "\n"
    assert "\n" not in printed and "\r" not in printed
    assert printed == (
        "::error file=models/a%2Cb%3Ac.py,line=7,title=Gate%3A auroc%2C 50%25%0Afailed"
        "::100%25 sure%0D%0Asecond line: a, b"
    )
    assert parse_command(printed) == (
        "error",
        {"file": "models/a,b:c.py", "line": "7", "title": title},
        message,
    )


def test_annotation_without_properties() -> None:
    stream = io.StringIO()
    for kind in ("warning", "notice"):
        github.annotation(kind, "events pending", stream=stream)
    assert stream.getvalue() == "::warning::events pending\n::notice::events pending\n"


def test_annotation_kind_is_checked() -> None:
    with pytest.raises(ValueError, match="annotation kind"):
        github.annotation("debug", "x", stream=io.StringIO())


@pytest.mark.usefixtures("fresh_secrets")
def test_annotation_redacts_secrets() -> None:
    redact_module.register_secret("whsec_c2VjcmV0LXZhbHVl")
    stream = io.StringIO()
    github.annotation(
        "error",
        "webhook refused whsec_c2VjcmV0LXZhbHVl; db postgresql://hokusai:hunter22@db:5432/site",
        title="secret whsec_c2VjcmV0LXZhbHVl",
        stream=stream,
    )
    printed = stream.getvalue()
    assert "whsec_c2VjcmV0LXZhbHVl" not in printed
    assert "hunter22" not in printed
    _, properties, data = parse_command(printed.strip())
    assert data == "webhook refused ***; db postgresql://hokusai:***@db:5432/site"
    assert properties["title"] == "secret ***"


@pytest.mark.usefixtures("fresh_secrets")
def test_summary_is_appended_and_redacted(github_env: dict[str, Path]) -> None:
    redact_module.register_secret("tok-3f9a8b7c")
    assert github.write_summary("first")
    assert github.write_summary("token tok-3f9a8b7c\n")
    assert github_env["summary"].read_text(encoding="utf-8") == "first\ntoken ***\n"


# -------------------------------------------------------------------------------------- reporting


def test_outputs_from_result_maps_every_action_output(github_env: dict[str, Path]) -> None:
    outputs = github.outputs_from_result(make_result())
    assert outputs == {
        "mlflow-run-id": "0a1b2c3d4e5f",
        "model-name": "hokusai-XRAY",
        "model-version": "3",
        "model-uri": "models:/hokusai-XRAY/3",
        "metric-value": "0.91",
        "status": "registered",
        "event-id": "5f0c7b1e-3a52-5e0c-9b8e-1d2f3a4b5c6d",
    }
    github.set_outputs(outputs)
    assert parse_output_file(github_env["output"].read_text(encoding="utf-8")) == outputs


def test_outputs_from_a_dry_run_leave_unknowns_unset() -> None:
    result = make_result(
        status="dry_run",
        mlflow_run_id=None,
        model_version=None,
        model_uri=None,
        event_id=None,
        dry_run=True,
    )
    outputs = github.outputs_from_result(result)
    assert outputs["status"] == "dry_run"
    assert outputs["metric-value"] == "0.91"
    assert outputs["model-version"] is None and outputs["event-id"] is None
    assert github.outputs_from_result({}) == dict.fromkeys(github.OUTPUT_FIELDS)


def _table_rows(markdown: str) -> dict[str, str]:
    rows: dict[str, str] = {}
    for line in markdown.splitlines():
        if line.startswith("| ") and not line.startswith("| |"):
            # split on unescaped pipes only, as GitHub's table parser does
            cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
            rows[cells[0]] = cells[1]
    return rows


def test_summary_table_shows_what_a_user_checks() -> None:
    markdown = github.summary_markdown(
        make_result(), tracking_uri="https://ci:s3cr3tpass@mlflow.example.com:8443/mlflow/?x=1"
    )
    assert markdown.startswith("### Hokusai model registration\n")
    rows = _table_rows(markdown)
    assert rows["Token"] == "`XRAY`"
    assert rows["Status"] == "`registered`"
    assert rows["Metric"] == "`auroc` = 0.91 ≥ 0.82 (baseline) — ✅ pass"
    assert rows["MLflow run"] == "`0a1b2c3d4e5f`"
    assert rows["Model version"] == (
        "[hokusai-XRAY v3](https://mlflow.example.com:8443/mlflow/#/models/hokusai-XRAY/versions/3)"
    )
    assert rows["Model URI"] == "`models:/hokusai-XRAY/3`"
    assert rows["Event id"] == "`5f0c7b1e-3a52-5e0c-9b8e-1d2f3a4b5c6d`"
    assert rows["Event delivery"] == "✅ delivered"
    assert rows["Dry run"] == "no"
    assert "s3cr3tpass" not in markdown and "ci:" not in markdown


def test_summary_lower_is_better_and_pending_delivery() -> None:
    result = make_result(
        metric={"name": "rmse", "value": 0.5, "baseline": 0.4, "greater_is_better": False},
        events_delivered=False,
        status="events_pending",
    )
    rows = _table_rows(github.summary_markdown(result, tracking_uri="sqlite:///.hokusai/mlflow.db"))
    assert rows["Metric"] == "`rmse` = 0.5 ≤ 0.4 (baseline) — ❌ fail"
    assert rows["Event delivery"].startswith("⏳ pending")
    assert "events relay" in rows["Event delivery"]
    assert rows["Model version"] == "hokusai-XRAY v3"  # no link for a non-web tracking URI


def test_summary_per_sink_delivery_and_dry_run() -> None:
    result = make_result(
        events_delivered={"pubsub": True, "webhook": False},
        dry_run=True,
        model_version=None,
        event_id=None,
    )
    markdown = github.summary_markdown(result, tracking_uri="http://127.0.0.1:5000")
    assert "(dry run — nothing changed)" in markdown.splitlines()[0]
    rows = _table_rows(markdown)
    assert rows["Event delivery"] == "pubsub ✅, webhook ⏳"
    assert rows["Event id"] == "—"
    assert rows["Model version"] == "hokusai-XRAY"
    assert rows["Dry run"] == "yes"


def test_summary_cells_escape_pipes_and_newlines() -> None:
    result = make_result(
        model_name="evil|name\nsecond",
        model_uri="models:/a|b/3",
        status="weird`status",
        model_version="3",
    )
    markdown = github.summary_markdown(result, tracking_uri="http://mlflow.local")
    table = [line for line in markdown.splitlines() if line.startswith("|")]
    # every row still has exactly two cells: no pipe or newline leaked out of a cell
    assert all(len(re.split(r"(?<!\\)\|", line)) == 4 for line in table)
    rows = _table_rows(markdown)
    assert rows["Model URI"] == "`models:/a\\|b/3`"
    assert rows["Status"] == "weird`status"
    assert rows["Model version"].startswith("[evil\\|name<br>second v3](http://mlflow.local/#/models/")
    assert "evil%7Cname%0Asecond/versions/3)" in rows["Model version"]


@pytest.mark.usefixtures("fresh_secrets")
def test_failure_summary_is_redacted_and_quoted() -> None:
    redact_module.register_secret("pg-pass-123")
    markdown = github.failure_summary(
        "Service unreachable", "database at postgresql://u:pg-pass-123@db/site did not answer."
    )
    assert markdown.startswith("### ❌ Hokusai registration failed: Service unreachable\n\n> ")
    assert "pg-pass-123" not in markdown


# ------------------------------------------------------------------------------------ action.yml


@pytest.fixture(scope="module")
def action() -> dict[str, object]:
    return yaml.safe_load((REPO_ROOT / "action.yml").read_text(encoding="utf-8"))


def test_action_runs_the_docker_image(action: dict) -> None:
    assert action["runs"] == {"using": "docker", "image": "Dockerfile"}
    assert action["name"] and action["description"] and action["author"]
    assert set(action["branding"]) == {"icon", "color"}


def test_every_input_is_documented(action: dict) -> None:
    inputs = action["inputs"]
    assert set(DESIGN_INPUTS) <= set(inputs)
    assert {"mlflow-tracking-token", "debug"} <= set(inputs)
    for name, spec in inputs.items():
        assert re.fullmatch(r"[a-z][a-z0-9-]*", name), name
        description = spec.get("description", "")
        assert len(description) > 20, f"input {name} needs a description"
        assert "Default:" in description, f"input {name} must state its default"
        assert ("SECRET" in description) == (name in SECRET_INPUTS), f"input {name}: secret or not?"
        assert spec.get("required") is False, f"input {name} may come from hokusai.yaml"
        if "default" in spec:
            assert isinstance(spec["default"], str), f"input {name}: defaults are strings"
            assert f"Default: {spec['default']}" in description, f"input {name}: default differs"


def test_every_designed_output_exists(action: dict) -> None:
    outputs = action["outputs"]
    assert set(outputs) == set(DESIGN_OUTPUTS)
    assert set(github.OUTPUT_FIELDS) == set(DESIGN_OUTPUTS)
    for name, spec in outputs.items():
        assert spec.get("description"), f"output {name} needs a description"


def test_summary_shows_what_the_upload_moved() -> None:
    result = make_result(upload={"bytes": 2 * 1024**3, "files": 1, "seconds": 13.1})
    rows = _table_rows(github.summary_markdown(result))
    assert rows["Upload"] == "2.0 GiB, 1 file in 13.1 s (156 MiB/s)"
    many_files = make_result(upload={"bytes": 102_400_000, "files": 10_000, "seconds": 4})
    many = _table_rows(github.summary_markdown(many_files))
    assert many["Upload"] == "97.7 MiB, 10,000 files in 4.0 s (24.4 MiB/s)"
    assert "Upload" not in _table_rows(github.summary_markdown(make_result()))  # a re-run uploads nothing
