"""What a registration records about where its model came from: the commit, ref and repository, and
the CI run's page. Each from its ``HOKUSAI_*`` variable, else from what the CI system sets (GitHub
Actions, GitLab CI, Jenkins, Buildkite: the ``ci`` variables of each row of ``settings.table``), and
the commit and branch, last, from ``git`` in the working directory."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from hokusai_action.settings import environment as env
from hokusai_action.settings.layers import Layers, first
from hokusai_action.settings.table import BY_KEY

GIT_TIMEOUT_SECONDS = 5


@dataclass(frozen=True)
class GitInfo:
    sha: str | None = None
    ref: str | None = None
    repository: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {"sha": self.sha, "ref": self.ref, "repository": self.repository}


def git_info(layers: Layers) -> GitInfo:
    """The commit, ref and repository: the variables first, then ``git`` for the commit and branch."""
    sha, ref, repository = (layers.raw(BY_KEY[f"git.{part}"]) for part in ("sha", "ref", "repository"))
    if sha is None:
        sha, ref = _ask_git(layers.cwd, ref)
    return GitInfo(sha=sha, ref=ref, repository=repository)


def _ask_git(cwd: Path, ref: str | None) -> tuple[str | None, str | None]:
    """The commit and branch of the checkout in ``cwd`` (``ref`` kept when given); None where git cannot say."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD", "--abbrev-ref", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None, ref
    parts = done.stdout.split()
    if done.returncode != 0 or len(parts) != 2:
        return None, ref
    return parts[0], ref or (None if parts[1] == "HEAD" else f"refs/heads/{parts[1]}")


def ci_run_url(layers: Layers) -> str | None:
    """The CI run that registered: HOKUSAI_CI_RUN_URL, else GitHub's run page, else GitLab's job,
    Jenkins' build, Buildkite's build."""
    setting = BY_KEY["ci_run_url"]
    explicit = layers.env(setting.env)
    if explicit:
        return explicit
    server, repository, run = (
        layers.environ.get(var.name) for var in (env.GITHUB_SERVER_URL, env.GITHUB_REPOSITORY, env.GITHUB_RUN_ID)
    )
    if server and repository and run:
        attempt = layers.environ.get(env.GITHUB_RUN_ATTEMPT.name)
        return f"{server}/{repository}/actions/runs/{run}" + (f"/attempts/{attempt}" if attempt else "")
    return first(*(layers.environ.get(var.name) for var in setting.ci))
