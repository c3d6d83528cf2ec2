"""hokusai-ml-platform: register a model trained for a Hokusai token.

Importing this package is cheap on purpose: the CLI's ``--help`` path imports it, and it must not
pull in MLflow, SQLAlchemy or Google clients.
"""

__version__ = "0.1.0"
