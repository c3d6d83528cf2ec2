"""Entrypoint of the container image: the GitHub Action on GitHub's runner, the command line anywhere else.

- On GitHub (``GITHUB_ACTIONS=true``) with no arguments: the action, ``hokusai_action.action``.
- Anywhere else, or with arguments (``docker run IMAGE model register ...``): the command line, run
  as ``python -m hokusai_action`` runs it.

Each face is one module of the package; this file only chooses, so neither face imports the other.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        from hokusai_action import github

        if github.on_github():
            from hokusai_action.action import run

            return run(os.environ)
    return run_cli(argv)


def run_cli(argv: list[str]) -> int:
    """The command line, in this process, as ``python -m hokusai_action`` runs it; its exit code."""
    import runpy

    sys.argv[1:] = argv
    try:
        runpy.run_module("hokusai_action", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    return 0


if __name__ == "__main__":
    from hokusai_action.process import short_command

    with short_command():
        sys.exit(main())
