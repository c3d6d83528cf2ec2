"""The documentation site's reference pages, generated from the code when the site is built.

A page asks for a generated part with a marker line, ``<!-- reference: NAME -->``; this MkDocs hook
replaces the marker with the Markdown that ``REFERENCES[NAME]`` writes from the code. Nothing
generated is committed, so the reference cannot drift from what the code does; the text around a
marker is written by hand. tests/unit/repository/test_docs.py builds the site and checks that every command,
option, action input and setting appears.

Everything the generators read is named in SOURCES below: when the code moves, repoint it there.
"""

from __future__ import annotations

import importlib
import json
import logging
import re
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]

# ------------------------------------------------------------------------------------------------
# What the reference is generated from ("module:attribute", or a path in the repository).
SOURCES = {
    "cli": "hokusai_action.cli:main",  # the click app: every command and option
    "prog": "hokusai-ml-platform",  # the console script's name
    "action": "action.yml",  # the action's inputs and outputs
    "settings": "hokusai_action.settings.table:SETTINGS",  # each setting's flag, input, variable, yaml keys
    "environment": "hokusai_action.settings.environment:ALL",  # every environment variable, with its doc
    "load_settings": "hokusai_action.settings.loader:load_settings",  # the defaults, as the code computes them
    "config_schema": "hokusai_action/settings/schema/hokusai.schema.json",  # hokusai.yaml's keys and their docs
    "exit_codes": "hokusai_action.errors:EXIT_CODES",
    "metrics": "hokusai_action.domain.metrics:CATALOGUE",
    "metric_lookup": "hokusai_action.domain.metrics:resolve_metric",
    "gate": "hokusai_action.domain.metrics:evaluate_gate",
    "registration_result": "hokusai_action.registration.result:RegistrationResult",
    "build_event": "hokusai_action.registration.event:build_event",
    "event_id": "hokusai_action.domain.event:event_id_for",
    "git_info": "hokusai_action.settings.provenance:GitInfo",
    "verify_report": "hokusai_action.registration.verify_report:VerifyReport",
    "pyproject": "pyproject.toml",  # the supported ranges (runtime dependencies, requires-python)
    "lowest": "constraints-lowest.txt",  # the oldest tested release of each (scripts/test-lowest.sh)
    "lock": "requirements.lock",  # the exact set of the image and CI
    "benchmarks": "benchmarks/README.md",  # the benchmarks page: the table and plot benchmarks/run.py writes
    "benchmark_plot": "benchmarks/shapes.png",
}
# The Mermaid library, fetched from the npm registry by scripts/test.sh (git-ignored). MkDocs
# Material loads Mermaid from a CDN unless the page already has it: served from the site itself,
# the diagrams render offline. Without it (no npm) the site falls back to the CDN.
MERMAID_JS = REPO / ".tools" / "mermaid" / "mermaid.min.js"
MERMAID_URL = "assets/javascripts/mermaid.min.js"
# ------------------------------------------------------------------------------------------------

MARKER = re.compile(r"^<!-- reference: ([a-z0-9-]+) -->$", re.MULTILINE)
log = logging.getLogger("mkdocs.plugins.hokusai_reference")


def load(name: str) -> Any:
    """The object or file a SOURCES entry names."""
    source = SOURCES[name]
    if ":" in source:
        module, _, attribute = source.partition(":")
        return getattr(importlib.import_module(module), attribute)
    return REPO / source


# ------------------------------------------------------------------------------------- Markdown


def escape(text: str) -> str:
    """``text`` for a Markdown table cell or paragraph: ``<`` outside code spans is not a tag, and a
    ``|`` never ends a cell."""
    parts = re.split(r"(`[^`]*`)", text)
    out = []
    for index, part in enumerate(parts):
        if index % 2 == 0:
            part = part.replace("<", "&lt;").replace(">", "&gt;")
        out.append(part.replace("|", r"\|"))
    return "".join(out)


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("\n", " ") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def code(text: str) -> str:
    return f"`{text}`"


# ------------------------------------------------------------------------------------ command line


def walk_commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command of the click app with its path of names, groups before their commands."""
    import click

    yield path, command
    if isinstance(command, click.Group):
        for name in command.list_commands(click.Context(command)):
            yield from walk_commands(command.get_command(click.Context(command), name), (*path, name))


def help_markdown(text: str) -> str:
    """A click docstring as Markdown: ``\\b`` blocks that start ``Example:`` become shell blocks,
    other paragraphs are joined as click joins them."""
    out = []
    for paragraph in textwrap.dedent(text).strip().split("\n\n"):
        lines = paragraph.strip("\n").splitlines()
        if lines and lines[0].strip() == "\b":
            lines = lines[1:]
            if lines and lines[0].strip().endswith(":"):
                body = textwrap.dedent("\n".join(lines[1:]))
                out.append(f"**{lines[0].strip()}**\n\n```bash\n{body}\n```")
            else:
                out.append("\n".join(escape(line.strip()) + "  " for line in lines))
            continue
        out.append(escape(" ".join(line.strip() for line in lines)))
    return "\n\n".join(out)


def option_type(param: Any) -> str:
    import click

    kind = param.type
    if getattr(param, "is_flag", False):
        text = "flag"
    elif isinstance(kind, click.Choice):
        text = " / ".join(code(str(choice)) for choice in kind.choices)
    elif isinstance(kind, click.types._NumberRangeBase):
        text = f"number, {kind._describe_range()}"
    elif isinstance(kind, click.Path):
        text = "path"
    else:
        text = kind.name
    if getattr(param, "multiple", False):
        text += ", repeatable"
    return text


def option_default(param: Any) -> str:
    default = param.default
    # click marks "no default" with a sentinel object of its own: only plain values are defaults
    if getattr(param, "is_flag", False) or isinstance(default, bool) or not isinstance(default, str | int | float):
        return ""
    return code(str(default))


def command_markdown(path: tuple[str, ...], command: Any) -> str:
    import click

    prog = SOURCES["prog"]
    name = " ".join((prog, *path))
    ctx = click.Context(command, info_name=name)
    usage = " ".join(command.collect_usage_pieces(ctx))
    parts = [f"## `{name}`", help_markdown(command.help or ""), f"Usage: `{name} {usage}`"]
    rows = []
    for param in command.params:
        if isinstance(param, click.Argument):
            rows.append([code(param.human_readable_name), "argument", "", "required" if param.required else ""])
            continue
        names = ", ".join(code(opt) for opt in (*param.opts, *param.secondary_opts))
        rows.append([names, option_type(param), option_default(param), escape(param.help or "")])
    rows.append([code("-h") + ", " + code("--help"), "flag", "", "Show the command's help and exit."])
    parts.append(table(["option", "takes", "default", "meaning"], rows))
    return "\n\n".join(parts)


def cli_reference() -> str:
    """Every command and option of the click app, with its help text and examples."""
    import click

    sections = []
    for path, command in walk_commands(load("cli")):
        if isinstance(command, click.Group) and path:
            continue  # a group's help only lists its commands, each documented below
        sections.append(command_markdown(path, command))
    return "\n\n".join(sections)


def command_paths() -> list[str]:
    """``prog command subcommand`` for every command that runs something (the tests check each is documented)."""
    import click

    prog = SOURCES["prog"]
    return [
        " ".join((prog, *path))
        for path, command in walk_commands(load("cli"))
        if path and not isinstance(command, click.Group)
    ]


# ----------------------------------------------------------------------------------------- action


def action_definition() -> dict[str, Any]:
    return yaml.safe_load(load("action").read_text(encoding="utf-8"))


def action_inputs() -> str:
    rows = []
    for name, spec in action_definition()["inputs"].items():
        default = spec.get("default")
        rows.append([code(name), code(str(default)) if default is not None else "", escape(spec["description"])])
    return table(["input", "default", "meaning"], rows)


def action_outputs() -> str:
    rows = [[code(name), escape(spec["description"])] for name, spec in action_definition()["outputs"].items()]
    return table(["output", "value"], rows)


# --------------------------------------------------------------------------------------- settings


def schema_leaves(schema: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every settable key of hokusai.yaml, dotted, with its schema."""
    for key, spec in schema.get("properties", {}).items():
        dotted = f"{prefix}{key}"
        if spec.get("type") == "object":
            yield from schema_leaves(spec, dotted + ".")
        else:
            yield dotted, spec


def config_docs() -> dict[str, str]:
    schema = json.loads(load("config_schema").read_text(encoding="utf-8"))
    return {key: spec.get("description", "") for key, spec in schema_leaves(schema)}


def default_settings() -> Any:
    """The settings with nothing given: no flag, no variable, no hokusai.yaml, in a folder named ``.``."""
    return load("load_settings")({}, environ={}, cwd=Path("/HOKUSAI_CWD"))


def shown_default(value: Any) -> str:
    if value is None or value == ():
        return "none"
    if isinstance(value, bool):
        return code(str(value).lower())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, tuple):
        value = ",".join(map(str, value))
    text = str(value).replace("/HOKUSAI_CWD/", "./").replace("/HOKUSAI_CWD", ".")
    return code(text)


def setting_value(settings: Any, key: str) -> Any:
    value = settings
    for part in key.split("."):
        value = getattr(value, part)
    return value


def setting_meaning(setting: Any, options: dict[str, Any], inputs: dict[str, Any], configs: dict[str, str]) -> str:
    if setting.doc:
        return setting.doc
    if setting.env is not None:
        return setting.env.doc
    if setting.flag and options.get(setting.flag) is not None and options[setting.flag].help:
        return options[setting.flag].help
    for key in setting.config:
        if configs.get(key):
            return configs[key]
    if setting.input:
        return inputs[setting.input]["description"]
    return ""


def register_options() -> dict[str, Any]:
    main = load("cli")
    register = dict(walk_commands(main))[("model", "register")]
    return {opt: param for param in register.params for opt in param.opts}


def settings_rows(*, read_by_others: bool) -> list[list[str]]:
    defaults = default_settings()
    options = register_options()
    inputs = action_definition()["inputs"]
    configs = config_docs()
    rows = []
    for setting in load("settings"):
        if (setting.key is None) != read_by_others:
            continue
        variable = ""
        if setting.env is not None:
            variable = code(setting.env.name) + (" (secret)" if setting.env.secret else "")
        if read_by_others:
            rows.append(
                [
                    variable,
                    code(setting.input) if setting.input else "",
                    escape(setting_meaning(setting, options, inputs, configs)),
                ]
            )
            continue
        ways = [
            *([f"flag {code(setting.flag)}"] if setting.flag else []),
            *([f"input {code(setting.input)}"] if setting.input else []),
            *([f"env {variable}"] if variable else []),
            *(f"yaml {code(key)}" for key in setting.config),
        ]
        rows.append(
            [
                "<br>".join(ways),
                shown_default(setting_value(defaults, setting.key)),
                escape(setting_meaning(setting, options, inputs, configs)),
            ]
        )
    return rows


def settings_reference() -> str:
    header = ["given as", "default", "meaning"]
    return table(header, settings_rows(read_by_others=False))


def passed_through_reference() -> str:
    return table(["environment", "action input", "meaning"], settings_rows(read_by_others=True))


# ------------------------------------------------------------------------------- codes and metrics


def exit_codes_reference() -> str:
    rows = [[code(str(number)), escape(meaning), escape(action)] for number, meaning, action in load("exit_codes")]
    return table(["exit", "meaning", "what to do"], rows)


def metrics_reference() -> str:
    rows = []
    for metric in load("metrics"):
        rows.append(
            [
                code(metric.name),
                ", ".join(code(alias) for alias in metric.aliases),
                "higher" if metric.greater_is_better else "lower",
                code(metric.range_text()),
                escape(metric.doc),
            ]
        )
    return table(["metric", "aliases", "better", "range", "what it is"], rows)


# ------------------------------------------------------------------------------------ JSON shapes

DIGEST = "sha256:9190c8e5a6b0f7d3c1e2a4b5c6d7e8f90123456789abcdef0123456789abcdef"
RUN_ID = "e6770b1d2c3f4a5b8c9d0e1f2a3b4c5d"


def sample_gate() -> Any:
    return load("gate")(load("metric_lookup")("auroc"), 0.875, 0.75)


def sample_event() -> Any:
    """A registration's event, built by the code that builds the real one, from sample parts."""
    request = SimpleNamespace(
        token_id="XRAY",
        event_source="hokusai-ml-platform",
        gate=sample_gate(),
        model=SimpleNamespace(digest=DIGEST),
        measured=SimpleNamespace(source="metrics-file", detail="checkpoints/final/metrics.json"),
        git=load("git_info")(sha="4f2a9c1e", ref="refs/heads/main", repository="hokusai/models"),
    )
    version = SimpleNamespace(run_id=RUN_ID, model_name="hokusai-XRAY", version="1", model_uri="models:/hokusai-XRAY/1")
    return load("build_event")(request, version, "2026-11-27T10:00:00+00:00", event_id=load("event_id")("XRAY", DIGEST))


def register_json() -> str:
    event = sample_event()
    result = load("registration_result")(
        token_id="XRAY",
        status="registered",
        gate=sample_gate(),
        artifact_digest=DIGEST,
        model_name="hokusai-XRAY",
        mlflow_run_id=RUN_ID,
        model_version="1",
        model_uri="models:/hokusai-XRAY/1",
        event_id=event.id,
        events_delivered={"database": True},
        metric_source="metrics-file",
        metric_source_detail="checkpoints/final/metrics.json",
    )
    return "```json\n" + json.dumps(result.as_dict(), indent=2, sort_keys=True) + "\n```"


def verify_json() -> str:
    report = load("verify_report")(
        token_id="XRAY",
        model_name="hokusai-XRAY",
        model_version="1",
        model_uri="models:/hokusai-XRAY/1",
        event_id=sample_event().id,
        artifact_digest=DIGEST,
    )
    report.add("model bytes", True, f"recomputed {DIGEST}")
    report.add("records agree", True, "version tags, token row and event name the same registration")
    return "```json\n" + json.dumps(report.as_dict(), indent=2, sort_keys=True) + "\n```"


def event_json() -> str:
    return "```json\n" + json.dumps(sample_event().structured(), indent=2, sort_keys=True) + "\n```"


# ---------------------------------------------------------------------------------------- versions


def _pins(path: Path) -> dict[str, str]:
    """``name==version`` lines of a constraints or lock file, by normalised name."""
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^ \\;]+)", line)
        if match:
            pins[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(2)
    return pins


def supported_versions() -> str:
    """Python and each runtime dependency: the range pyproject declares, the oldest release the
    lowest-set run tests, and the locked release."""
    import tomllib

    project = tomllib.loads(load("pyproject").read_text(encoding="utf-8"))["project"]
    lowest, locked = _pins(load("lowest")), _pins(load("lock"))
    rows = [["Python", f"`{project['requires-python']}`", "3.11", "3.11 (image); CI tests 3.11, 3.12, 3.13"]]
    for requirement in project["dependencies"]:
        name = re.split(r"[<>=!~ \[;]", requirement, maxsplit=1)[0]
        key = re.sub(r"[-_.]+", "-", name).lower()
        declared = requirement[len(name) :].strip()
        rows.append([name, f"`{declared}`", lowest.get(key, "(untested)"), locked.get(key, "(not locked)")])
    return table(["package", "supported", "oldest tested", "locked (image, CI)"], rows)


# ------------------------------------------------------------------------------------- benchmarks


def benchmarks_page() -> str:
    """benchmarks/README.md itself: run.py writes its table; the site shows it with the plot."""
    text = load("benchmarks").read_text(encoding="utf-8")
    return re.sub(r"^# .*\n", "", text, count=1)


REFERENCES: dict[str, Callable[[], str]] = {
    "cli": cli_reference,
    "action-inputs": action_inputs,
    "action-outputs": action_outputs,
    "settings": settings_reference,
    "passed-through": passed_through_reference,
    "exit-codes": exit_codes_reference,
    "metrics": metrics_reference,
    "json-register": register_json,
    "json-verify": verify_json,
    "json-event": event_json,
    "supported-versions": supported_versions,
    "benchmarks": benchmarks_page,
}


# ------------------------------------------------------------------------------------ MkDocs hooks


def on_config(config: Any) -> Any:
    if MERMAID_JS.is_file():
        config.extra_javascript.append(MERMAID_URL)
    else:
        log.info("%s is missing (scripts/test.sh fetches it with npm): Mermaid loads from its CDN", MERMAID_JS)
    return config


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    if MERMAID_JS.is_file():
        files.append(File.generated(config, MERMAID_URL, abs_src_path=str(MERMAID_JS)))
    plot = load("benchmark_plot")
    files.append(File.generated(config, f"benchmarks/{plot.name}", abs_src_path=str(plot)))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    def generated(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in REFERENCES:
            raise ValueError(f"{page.file.src_uri}: unknown reference marker '{name}' (known: {', '.join(REFERENCES)})")
        return REFERENCES[name]()

    return MARKER.sub(generated, markdown)


def main() -> None:
    """Print one generated part: ``python docs/hooks/reference.py cli``."""
    import sys

    for name in sys.argv[1:] or list(REFERENCES):
        print(REFERENCES[name]())


if __name__ == "__main__":
    main()


__all__ = ["SOURCES", "command_paths", "schema_leaves", "walk_commands"]
