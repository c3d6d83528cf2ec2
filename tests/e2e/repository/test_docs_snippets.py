"""The laptop walk-through of docs/getting-started.md, run as written, then the signing walk-through of
docs/deploy/verify.md after it (it continues in the same folder).

The blocks marked `<!-- run: laptop -->` and `<!-- run: signing -->` are read from the pages (never
copied here) and run in order, in one shell, in an empty folder, against the embedded default: no
MLFLOW_TRACKING_URI, no HOKUSAI_DATABASE_URL, with the command line as users install it first on PATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.docs_site import DOCS, GETTING_STARTED, blocks
from tests.helpers import CLI_PYTHON

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

VERIFY_PAGE = DOCS / "deploy" / "verify.md"


def walk_through() -> str:
    laptop = [block for block in blocks(GETTING_STARTED) if block.run == "laptop"]
    signing = [block for block in blocks(VERIFY_PAGE) if block.run == "signing"]
    assert laptop and signing, "the pages lost their walk-through blocks"
    parts = ["set -euo pipefail"]
    for block in (*laptop, *signing):
        parts += [f"echo '>>> {block.where}'", block.text]
    return "\n".join(parts)


def user_environment(home: Path) -> dict[str, str]:
    """A user's shell: the command line on PATH and nothing pointing at a server."""
    bin_dir = str(Path(CLI_PYTHON).parent)
    keep = {"LANG", "LC_ALL", "TMPDIR", "TZ"}
    env = {name: value for name, value in os.environ.items() if name in keep}
    env.update(HOME=str(home), PATH=os.pathsep.join([bin_dir, "/usr/local/bin", "/usr/bin", "/bin"]))
    return env


def test_the_laptop_walk_through_runs_as_written(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: the signing walk-through makes its key pair with it")
    folder = tmp_path / "empty"
    folder.mkdir()
    done = subprocess.run(
        ["bash", "-c", walk_through()],
        cwd=folder,
        env=user_environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=420,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    # what the page says the reader sees
    assert "Token XRAY registered." in output
    assert "models:/hokusai-XRAY/1 of token XRAY: verified" in output
    assert "already registered" in output
    assert "refused with exit code 1" in output
    assert "models:/hokusai-ZRAY/1 of token ZRAY: verified" in output
    assert output.count("Verification succeeded") == 2  # the upstream model_signing tool, files and statement
    assert "ZRAY hokusai-ZRAY 1 sha256:" in output
    assert (folder / ".hokusai" / "hokusai.db").is_file()
    assert not (tmp_path / ".hokusai").exists()  # nothing written outside the folder it ran in
