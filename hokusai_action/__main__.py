"""``python -m hokusai_action`` is the ``hokusai-ml-platform`` command."""

from hokusai_action.cli import main

main(prog_name="hokusai-ml-platform")
