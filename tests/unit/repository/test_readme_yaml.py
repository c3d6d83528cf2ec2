"""The README's copy-paste workflow runs as pasted into a user's repository: its permissions, its
Google authentication, only the action's declared inputs and outputs, and nothing from this
repository's examples/. (Every yaml block of the README and the docs is checked by GitHub's schema,
actionlint or the tool's own loader in tests/unit/repository/test_docs.py.)
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.workflow_lint import unpinned_uses

pytestmark = [pytest.mark.unit]

REPO_ROOT = Path(__file__).resolve().parents[3]
README = REPO_ROOT / "README.md"
ACTION = yaml.safe_load((REPO_ROOT / "action.yml").read_text(encoding="utf-8"))
FENCE = re.compile(r"^```yaml[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
OWN_ACTION = "hokusai/hokusai-ml-platform"
GOOGLE_AUTH = "google-github-actions/auth"


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
