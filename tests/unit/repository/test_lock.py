"""requirements.lock and the Dockerfile: the image installs exactly the locked files, checked by hash.

What a reviewer of a supply-chain change would check: every package in the lock is pinned to one
version and carries sha256 hashes; pyproject's direct runtime dependencies are ranges whose lower
bounds are the versions constraints-lowest.txt tests, and the lock holds a version inside each; the
lock holds the build tools the image builds the package with and nothing from the test extra, no
index location is written into it, and the Dockerfile installs the lock in pip's hash-checking mode
and nothing else from an index."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

pytestmark = [pytest.mark.unit]

REPO_ROOT = Path(__file__).resolve().parents[3]
LOCK = REPO_ROOT / "requirements.lock"
DOCKERFILE = REPO_ROOT / "Dockerfile"
PYPROJECT = REPO_ROOT / "pyproject.toml"
LOWEST = REPO_ROOT / "constraints-lowest.txt"
HADOLINT = Path(sys.executable).with_name("hadolint")

PIN = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[A-Za-z0-9.+!_-]+)")
HASH_OPTION = re.compile(r"--hash=sha256:[0-9a-f]{64}")


def _logical_lines(text: str) -> list[str]:
    """The lines pip reads: comments dropped, backslash continuations joined."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        joined = (pending + line).strip()
        pending = ""
        if joined:
            lines.append(joined)
    if pending.strip():
        lines.append(pending.strip())
    return lines


def _lock_entries() -> dict[str, tuple[str, list[str]]]:
    """canonical name -> (version, hash options) for every requirement in requirements.lock."""
    entries: dict[str, tuple[str, list[str]]] = {}
    for line in _logical_lines(LOCK.read_text()):
        requirement, *options = line.split()
        match = PIN.fullmatch(requirement)
        assert match, f"requirements.lock: {line[:80]!r} is not 'name==version' followed by hashes"
        bad = [option for option in options if not HASH_OPTION.fullmatch(option)]
        assert not bad, f"requirements.lock: {requirement} has options other than --hash=sha256:<64 hex>: {bad}"
        assert options, f"requirements.lock: {requirement} has no --hash=sha256: line"
        name = canonicalize_name(match["name"])
        assert name not in entries, f"requirements.lock: {name} is listed twice"
        entries[name] = (match["version"], options)
    return entries


def _pyproject() -> dict:
    with PYPROJECT.open("rb") as handle:
        return tomllib.load(handle)


def _dockerfile_runs() -> list[str]:
    """The RUN instructions of the Dockerfile, continuations joined."""
    runs: list[str] = []
    for line in _logical_lines(DOCKERFILE.read_text()):
        keyword, _, rest = line.partition(" ")
        if keyword.upper() == "RUN":
            runs.append(rest)
    return runs


def _pip_installs() -> list[list[str]]:
    """The argument lists of every `pip install` command in the Dockerfile's RUN instructions."""
    installs = []
    for run in _dockerfile_runs():
        for command in re.split(r"&&|;|\|\|", run):
            words = shlex.split(command)
            for i, word in enumerate(words[:-1]):
                if word.endswith("pip") and words[i + 1] == "install":
                    installs.append(words[i + 2 :])
    return installs


def test_every_locked_package_is_pinned_with_sha256_hashes() -> None:
    entries = _lock_entries()
    assert len(entries) > 20  # the runtime set is some sixty packages; an empty lock must not pass
    assert all(hashes for _, hashes in entries.values())


def test_lock_names_no_index_or_other_option() -> None:
    """No `--index-url`/`--find-links` line: the index is the machine's pip setting, never the repo's."""
    options = [line for line in _logical_lines(LOCK.read_text()) if line.startswith("-")]
    assert options == []
    assert "://" not in LOCK.read_text()


def _lowest_pins() -> dict[str, str]:
    """canonical name -> version for every line of constraints-lowest.txt."""
    pins: dict[str, str] = {}
    for line in _logical_lines(LOWEST.read_text()):
        match = PIN.fullmatch(line)
        assert match, f"constraints-lowest.txt: {line[:80]!r} is not 'name==version'"
        name = canonicalize_name(match["name"])
        assert name not in pins, f"constraints-lowest.txt: {name} is listed twice"
        pins[name] = match["version"]
    return pins


def _direct_requirements() -> list[Requirement]:
    return [Requirement(spec) for spec in _pyproject()["project"]["dependencies"]]


def test_direct_runtime_dependencies_are_ranges_with_a_lower_bound() -> None:
    """Installed beside a user's own MLflow, SQLAlchemy, requests: an exact pin makes pip give up."""
    for requirement in _direct_requirements():
        operators = sorted(s.operator for s in requirement.specifier)
        assert ">=" in operators, f"pyproject.toml: {requirement} has no lower bound (>=)"
        assert not {"==", "===", "~="} & set(operators), f"pyproject.toml: {requirement} is pinned, not a range"


def test_each_lower_bound_is_the_version_the_lowest_set_tests() -> None:
    lowest = _lowest_pins()
    for requirement in _direct_requirements():
        name = canonicalize_name(requirement.name)
        (bound,) = [s.version for s in requirement.specifier if s.operator == ">="]
        assert name in lowest, f"{name} (pyproject.toml) is missing from constraints-lowest.txt"
        assert Version(lowest[name]) == Version(bound), (
            f"{name}: pyproject.toml's lower bound is {bound}, constraints-lowest.txt tests {lowest[name]}"
        )


def test_lowest_constraints_name_no_index_and_no_hash() -> None:
    text = LOWEST.read_text()
    assert "://" not in text
    assert [line for line in _logical_lines(text) if line.startswith("-")] == []


def test_locked_versions_are_inside_the_ranges() -> None:
    entries = _lock_entries()
    for requirement in _direct_requirements():
        name = canonicalize_name(requirement.name)
        assert name in entries, f"{name} (pyproject.toml) is missing from requirements.lock"
        assert requirement.specifier.contains(entries[name][0], prereleases=True), (
            f"{name}: requirements.lock has {entries[name][0]}, outside pyproject.toml's {requirement.specifier}; "
            "run scripts/lock.sh"
        )


def test_the_test_servers_mlflow_is_the_locked_clients_version() -> None:
    """The full mlflow of the test extra (the tests' server) pulls in mlflow-skinny of its own version."""
    test_extra = [Requirement(spec) for spec in _pyproject()["project"]["optional-dependencies"]["test"]]
    (server,) = [r for r in test_extra if canonicalize_name(r.name) == "mlflow"]
    (pin,) = [s.version for s in server.specifier if s.operator == "=="]
    assert _lock_entries()["mlflow-skinny"][0] == pin


def test_build_requirements_are_locked() -> None:
    """The image builds the package without build isolation, from the build tools in the lock."""
    entries = _lock_entries()
    for spec in _pyproject()["build-system"]["requires"]:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        assert name in entries, f"{name} ([build-system] requires) is missing from requirements.lock"
        assert requirement.specifier.contains(entries[name][0]), f"{name} {entries[name][0]} does not satisfy {spec!r}"


def test_lock_holds_no_test_only_package() -> None:
    project = _pyproject()["project"]
    runtime = {canonicalize_name(Requirement(spec).name) for spec in project["dependencies"]}
    test_only = {canonicalize_name(Requirement(spec).name) for spec in project["optional-dependencies"]["test"]}
    assert sorted((test_only - runtime) & _lock_entries().keys()) == []
    assert canonicalize_name(project["name"]) not in _lock_entries()


def test_dockerfile_installs_the_lock_in_hash_checking_mode() -> None:
    installs = _pip_installs()
    locked = [args for args in installs if any(arg.endswith("requirements.lock") for arg in args)]
    assert len(locked) == 1, f"expected one `pip install -r .../requirements.lock` in the Dockerfile, got {installs}"
    assert "--require-hashes" in locked[0]
    assert "--no-deps" in locked[0]


def test_dockerfile_installs_nothing_else_from_an_index() -> None:
    """Every other pip install is the local package (COPY'd source), without its dependencies."""
    for args in _pip_installs():
        if any(arg.endswith("requirements.lock") for arg in args):
            continue
        targets = [arg for arg in args if not arg.startswith("-")]
        assert "--no-deps" in args, f"`pip install {' '.join(args)}` would fetch unhashed dependencies"
        assert "--no-build-isolation" in args, f"`pip install {' '.join(args)}` would fetch unhashed build tools"
        assert all(target.startswith("/") for target in targets), f"`pip install {' '.join(args)}` installs by name"


def test_dockerfile_passes_hadolint() -> None:
    if not HADOLINT.exists():
        pytest.skip(f"{HADOLINT} is not installed (pip install -e '.[test]')")
    result = subprocess.run([str(HADOLINT), str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
