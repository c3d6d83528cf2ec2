"""The program: its root group, with each command group attached, and how the console script runs it."""

from __future__ import annotations

import click

from hokusai_action import __version__
from hokusai_action.cli.boundary import OneLineErrors
from hokusai_action.cli.db import db
from hokusai_action.cli.doctor import doctor
from hokusai_action.cli.events import events
from hokusai_action.cli.model import model
from hokusai_action.cli.options import CONTEXT
from hokusai_action.cli.token import token

PROG = "hokusai-ml-platform"


@click.group(cls=OneLineErrors, context_settings=CONTEXT)
@click.version_option(__version__, prog_name=PROG)
def main() -> None:
    """Register a model trained for a Hokusai token: MLflow registry, Hokusai database,
    metric gate and the token_ready_for_deploy event.

    \b
    Example:
      hokusai-ml-platform db upgrade
      hokusai-ml-platform token create XRAY
      hokusai-ml-platform model register --token-id XRAY \\
          --model-path ./checkpoints/final --metric auroc --baseline 0.82
    """


for group in (model, db, token, events, doctor):
    main.add_command(group)


def run() -> None:
    """The ``hokusai-ml-platform`` program (console script, ``python -m``): ``main`` in a process
    paced for one short command (``hokusai_action.process``)."""
    from hokusai_action.process import short_command

    with short_command():
        main(prog_name=PROG)
