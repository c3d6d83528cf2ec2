"""``python -m hokusai_action`` is the ``hokusai-ml-platform`` command."""

from hokusai_action.cli import run

run()
