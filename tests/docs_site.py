"""The documentation site as the tests see it: built with `mkdocs build --strict`, its generator
loaded as a module, and the fenced blocks of its pages and of the README read as a user copies them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

from tests.helpers import load_script

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCS = REPO_ROOT / "docs"
README = REPO_ROOT / "README.md"
GETTING_STARTED = DOCS / "getting-started.md"
MKDOCS = Path(sys.executable).with_name("mkdocs")
GENERATOR = DOCS / "hooks" / "reference.py"
MERMAID_JS = REPO_ROOT / ".tools" / "mermaid" / "mermaid.min.js"


def build(site_dir: Path, *, config: Path = REPO_ROOT / "mkdocs.yml") -> subprocess.CompletedProcess[str]:
    """`mkdocs build --strict` of ``config`` into ``site_dir``: a broken link or a missing page fails it."""
    if not MKDOCS.exists():
        pytest.skip(f"{MKDOCS} is not installed: pip install -e '.[docs]' (scripts/test.sh does)")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's banner about MkDocs 2, not about us
    return subprocess.run(
        [str(MKDOCS), "build", "--strict", "--config-file", str(config), "--site-dir", str(site_dir)],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=config.parent,
    )


def build_or_fail(site_dir: Path) -> Path:
    done = build(site_dir)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    return site_dir


def generator() -> ModuleType:
    """docs/hooks/reference.py, the reference pages' generator."""
    return load_script(GENERATOR, "docs_reference")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    language: str
    text: str
    run: str | None  # the NAME of a `<!-- run: NAME -->` marker right above it

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO_ROOT)}:{self.line}"


FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+)(?P<language>[\w+-]*)[^\n]*$")
RUN_MARKER = re.compile(r"^<!-- run: (?P<name>[\w-]+) -->$")


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file, in order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        previous = next((line for line in reversed(lines[:index]) if line.strip()), "")
        marker = RUN_MARKER.match(previous.strip())
        indent, fence = len(opening["indent"]), opening["fence"]
        body = []
        index += 1
        while index < len(lines) and lines[index].strip() != fence:
            body.append(lines[index][indent:])
            index += 1
        found.append(
            Block(
                path=path,
                line=index - len(body),
                language=opening["language"].lower(),
                text="\n".join(body) + "\n",
                run=marker["name"] if marker else None,
            )
        )
        index += 1
    return found
