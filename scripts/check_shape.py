#!/usr/bin/env python3
"""The house's limits, measured: no function over 60 lines, no class over 300, no module over 500, no
comment that names an issue, in the package and the action's entrypoint; then mypy over both (its
settings in pyproject.toml).

    python scripts/check_shape.py            # the limits and mypy; exit 1 listing what breaks a limit
    python scripts/check_shape.py --report   # also the longest functions, classes and modules

A function's length is from its ``def`` line (decorators excluded) to its last line, docstring and
comments included: what a reader scrolls through.
"""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("hokusai_action", "entrypoint.py")
LIMITS = {"function": 60, "class": 300, "module": 500}
# a comment that points at the tracker instead of saying why the code is as it is
ISSUE_REFERENCE = re.compile(r"#.*\b(?:issue|ticket|bug)\s*#?\d+", re.IGNORECASE)


@dataclass(frozen=True)
class Measure:
    kind: str
    name: str
    path: str
    line: int
    length: int

    @property
    def over(self) -> bool:
        return self.length > LIMITS[self.kind]

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.kind} {self.name} is {self.length} lines (limit {LIMITS[self.kind]})"


def python_files() -> Iterator[Path]:
    for source in SOURCES:
        path = ROOT / source
        yield from sorted(path.rglob("*.py")) if path.is_dir() else [path]


def measures(path: Path) -> Iterator[Measure]:
    text = path.read_text(encoding="utf-8")
    relative = path.relative_to(ROOT).as_posix()
    yield Measure("module", relative, relative, 1, len(text.splitlines()))
    for node in ast.walk(ast.parse(text, filename=relative)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            kind = "class" if isinstance(node, ast.ClassDef) else "function"
            assert node.end_lineno is not None
            yield Measure(kind, node.name, relative, node.lineno, node.end_lineno - node.lineno + 1)


def issue_references(path: Path) -> Iterator[str]:
    relative = path.relative_to(ROOT).as_posix()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if ISSUE_REFERENCE.search(line):
            yield f"{relative}:{number}: a comment names an issue: {line.strip()}"


def run_mypy() -> int:
    done = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, check=False)
    print(done.stdout.strip() or done.stderr.strip())
    return done.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--report", action="store_true", help="also print the longest of each kind")
    parser.add_argument("--no-mypy", action="store_true", help="the limits only")
    args = parser.parse_args(argv)
    found = [measure for path in python_files() for measure in measures(path)]
    problems = [str(measure) for measure in found if measure.over]
    problems += [line for path in python_files() for line in issue_references(path)]
    if args.report:
        for kind in LIMITS:
            longest = sorted((m for m in found if m.kind == kind), key=lambda m: -m.length)[:5]
            print(f"longest {kind}s: " + ", ".join(f"{m.name} {m.length}" for m in longest))
    for problem in problems:
        print(problem)
    status = 1 if problems else 0
    print(f"shape: {len(problems)} over a limit" if problems else "shape: every limit holds")
    if not args.no_mypy and run_mypy() != 0:
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
