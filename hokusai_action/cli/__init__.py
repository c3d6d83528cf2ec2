"""The ``hokusai-ml-platform`` command line: one face of the tool (the GitHub Action,
``hokusai_action.action``, is the other). It parses arguments, loads the settings, runs a command of
``hokusai_action.commands`` and reports its result, or its failure through ``hokusai_action.failure``.

One module per command group (``model``, ``db``, ``token``, ``events``, ``doctor``); ``app`` joins
them under the root group. ``--help`` must stay fast: these modules import only click and the
package's pure modules (never MLflow, SQLAlchemy or a Google client); a command imports
``hokusai_action.commands`` inside its body, once it actually runs. Never imports the other face.
"""

from hokusai_action.cli.app import main, run

__all__ = ["main", "run"]
