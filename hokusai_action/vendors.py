"""What the vendors (MLflow, SQLAlchemy, Alembic, urllib3/requests, the Google clients) log and print
on their own: quieted, and passed through ``redact`` (DESIGN.md: secrets never printed, "including
what libraries print on their own").

Light on purpose: a command calls this before it imports any vendor, and before its heavy imports
(``model register`` starts the model's hash first).
"""

from __future__ import annotations

import logging
import os

from hokusai_action.redact import redact_standard_streams
from hokusai_action.settings import environment as env
from hokusai_action.settings.table import BY_VARIABLE

VENDOR_LOGGERS = ("mlflow", "alembic", "sqlalchemy", "urllib3", "requests", "google", "grpc", "httpx")


def quiet_vendor_logs() -> None:
    """Vendors log at WARNING and above only, and everything they print goes through ``redact``."""
    for name in VENDOR_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    route_vendor_output()


def route_vendor_output() -> None:
    """Send what MLflow, SQLAlchemy, Alembic, urllib3/requests and the Google client print through
    ``redact``: their loggers' handlers (MLflow has its own, which does not propagate), warnings,
    and what they write straight to stdout/stderr (MLflow's "View run ... at: <tracking uri>").
    MLflow's own printing of the URI is switched off first, unless the user asked for it."""
    _set_default(env.MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT)
    # MLflow's telemetry (on outside CI) fetches a config from the internet in a thread; when that
    # fails it pops a variable from os.environ while a request thread iterates os.environ for proxies
    # (urllib's getproxies_environment): KeyError, exit 4, seen in 1 of 16 registrations at once
    _set_default(env.MLFLOW_DISABLE_TELEMETRY)
    # MLflow's handler (built at import, later) writes to whatever sys.stderr is at each call, so the
    # redacting streams catch it; handlers built before the swap get a redacting filter.
    redact_standard_streams()


def _set_default(var: env.EnvVar) -> None:
    """Set a vendor's variable to the value the tool sets (``settings.table``), unless the user set it."""
    os.environ.setdefault(var.name, BY_VARIABLE[var.name].default)
