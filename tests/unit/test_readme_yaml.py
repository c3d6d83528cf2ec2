"""Every ```yaml block of the README, checked as what it is by the tools that read it.

A workflow goes through GitHub's schema and actionlint, as tests/unit/test_workflows.py checks the
repository's own; a list of steps goes through them inside a minimal workflow; a hokusai.yaml through
the tool's own loader (its JSON schema and rules). A block of another kind fails until this file
learns to check it. The copy-paste workflow must also run as pasted into a user's repository: its
permissions, its Google authentication, only the action's declared inputs and outputs, and nothing
from this repository's examples/.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
import yaml

from tests.unit.test_workflows import actionlint, check_jsonschema, unpinned_uses  # noqa: F401 - a fixture

pytestmark = [pytest.mark.unit]

REPO_ROOT = Path(__file__).resolve().parents[2]
README = REPO_ROOT / "README.md"
ACTION = yaml.safe_load((REPO_ROOT / "action.yml").read_text(encoding="utf-8"))
FENCE = re.compile(r"^```yaml[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
HOKUSAI_KEYS = {"token_id", "model_path", "metric", "baseline", "mlflow", "database", "events", "signing"}
OWN_ACTION = "hokusai/hokusai-ml-platform"
GOOGLE_AUTH = "google-github-actions/auth"
# a list of steps is checked inside this job
STEPS_WRAPPER = "name: wrapper\non: push\njobs:\n  job:\n    runs-on: ubuntu-latest\n    steps:\n"


def yaml_blocks() -> list[tuple[int, str]]:
    text = README.read_text(encoding="utf-8")
    return [(text.count("\n", 0, match.start()) + 1, match.group(1)) for match in FENCE.finditer(text)]


def kind_of(text: str) -> str:
    data = yaml.safe_load(text)
    if isinstance(data, dict) and "jobs" in data:
        return "workflow"
    if isinstance(data, list) and data and all(isinstance(step, dict) and {"uses", "run"} & set(step) for step in data):
        return "steps"
    if isinstance(data, dict) and set(data) & HOKUSAI_KEYS:
        return "hokusai.yaml"
    return "unknown"


BLOCKS = yaml_blocks()
BLOCK_IDS = [f"README.md:{line}" for line, _ in BLOCKS]
WORKFLOW_BLOCKS = [
    pytest.param(line, text, id=f"README.md:{line}") for line, text in BLOCKS if kind_of(text) in ("workflow", "steps")
]


def as_workflow(text: str) -> str:
    if kind_of(text) == "steps":
        return STEPS_WRAPPER + textwrap.indent(textwrap.dedent(text), " " * 6)
    return text


def load_workflow(text: str) -> dict:
    workflow = yaml.safe_load(text)
    workflow["on"] = workflow.pop(True, workflow.get("on"))  # PyYAML reads the key `on` as True
    return workflow


def copy_paste_workflow() -> dict:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Copy-paste workflow") :]
    match = FENCE.search(section)
    assert match is not None, "the Copy-paste workflow section has no yaml block"
    return load_workflow(match.group(1))


# ------------------------------------------------------------------------------ every block


def test_the_readme_has_yaml_blocks_and_a_workflow_among_them() -> None:
    assert "workflow" in {kind_of(text) for _, text in BLOCKS}


@pytest.mark.parametrize(("line", "text"), BLOCKS, ids=BLOCK_IDS)
def test_every_yaml_block_is_a_kind_this_file_checks(line: int, text: str) -> None:
    assert kind_of(text) != "unknown", f"README.md:{line}: a yaml block this test does not know how to check"


@pytest.mark.parametrize(("line", "text"), WORKFLOW_BLOCKS)
def test_workflow_blocks_match_githubs_workflow_schema(line: int, text: str, tmp_path: Path) -> None:
    path = tmp_path / f"readme-{line}.yml"
    path.write_text(as_workflow(text), encoding="utf-8")
    done = check_jsonschema("vendor.github-workflows", path)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(("line", "text"), WORKFLOW_BLOCKS)
def test_workflow_blocks_pass_actionlint(actionlint, line: int, text: str, tmp_path: Path) -> None:  # noqa: F811
    path = tmp_path / f"readme-{line}.yml"
    path.write_text(as_workflow(text), encoding="utf-8")
    assert actionlint(path) == []


@pytest.mark.parametrize(
    ("line", "text"), [pytest.param(n, t, id=f"README.md:{n}") for n, t in BLOCKS if kind_of(t) == "hokusai.yaml"]
)
def test_hokusai_yaml_blocks_load_with_the_tools_own_rules(line: int, text: str, tmp_path: Path) -> None:
    from hokusai_action.settings import load_config_file

    path = tmp_path / "hokusai.yaml"
    path.write_text(text, encoding="utf-8")
    assert load_config_file(path).values


# ------------------------------------------------------------------------- the copy-paste workflow


def test_the_copy_paste_workflow_is_a_whole_workflow() -> None:
    workflow = copy_paste_workflow()
    assert workflow["on"], "it says when it runs"
    assert workflow["permissions"]["contents"] == "read"
    steps = [step for job in workflow["jobs"].values() for step in job["steps"]]
    uses = [step["uses"].split("@")[0] for step in steps if "uses" in step]
    assert uses[0] == "actions/checkout"
    assert OWN_ACTION in uses


def test_the_copy_paste_workflow_authenticates_to_google_for_pubsub() -> None:
    workflow = copy_paste_workflow()
    (job,) = workflow["jobs"].values()
    steps = job["steps"]
    register = next(step for step in steps if step.get("uses", "").startswith(OWN_ACTION + "@"))
    if "pubsub" not in str(register["with"].get("event-sinks", "")):
        pytest.skip("the copy-paste workflow uses no Pub/Sub sink")
    permissions = {**workflow.get("permissions", {}), **job.get("permissions", {})}
    assert permissions.get("id-token") == "write", "google-github-actions/auth needs the job's OIDC token"
    names = [step.get("uses", "").split("@")[0] for step in steps]
    # after checkout (which cleans the workspace where auth writes its credentials file), before the action
    assert names.index("actions/checkout") < names.index(GOOGLE_AUTH) < steps.index(register)


def test_the_copy_paste_workflow_uses_only_declared_inputs_and_outputs() -> None:
    workflow = copy_paste_workflow()
    steps = [step for job in workflow["jobs"].values() for step in job["steps"]]
    register = next(step for step in steps if step.get("uses", "").startswith(OWN_ACTION + "@"))
    assert set(register["with"]) <= set(ACTION["inputs"])
    used = set(re.findall(rf"steps\.{register['id']}\.outputs\.([\w-]+)", yaml.safe_dump(steps)))
    assert used and used <= set(ACTION["outputs"])
    assert register["with"]["database-url"] == "${{ secrets.HOKUSAI_DATABASE_URL }}"  # never inline


def test_the_copy_paste_workflow_pins_other_actions_and_keeps_values_out_of_scripts() -> None:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Copy-paste workflow") :]
    block = FENCE.search(section).group(1)
    # the action itself is pinned by a release commit the reader picks (README, "Releases")
    others = "\n".join(line for line in block.splitlines() if OWN_ACTION + "@" not in line)
    assert unpinned_uses(others) == []
    steps = [step for job in copy_paste_workflow()["jobs"].values() for step in job["steps"]]
    scripts = [step["run"] for step in steps if "run" in step]
    assert scripts and [script for script in scripts if "${{" in script] == []
    # pasted into the user's repository, where this repository's examples/ does not exist
    assert [script for script in scripts if "examples/" in script] == []
