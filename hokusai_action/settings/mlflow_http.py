"""MLflow's HTTP variables, checked as MLflow will read them, before anything changes.

MLflow's HTTP client reads them itself, per request, and checks their limits only when it sends one:
a value it cannot use would be an internal error or an outage halfway through a registration, not
exit 2 before it. Parsed as MLflow parses them (``mlflow/environment_variables.py``: ``int``,
``float``, booleans as true/false/1/0), within MLflow's limits (``mlflow/utils/request_utils.py``,
which its private variables can raise) and within what a socket timeout or a sleep can take.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from hokusai_action.errors import InputError
from hokusai_action.settings import environment as env
from hokusai_action.settings.table import BY_VARIABLE

BAD_MLFLOW_HTTP_VARIABLE = "{name} must be {accepted}, not '{value}'. MLflow's HTTP client reads it: fix or unset it."
BAD_MLFLOW_HTTP_DEFAULT = (
    "{name} must be {accepted}, not '{value}' (the tool's default), under the limit you set: set {name} within it."
)
# MLflow's own ceilings on the retries and the backoff factor, when its private variables are unset
MLFLOW_RETRIES_CEILING = 10
MLFLOW_BACKOFF_CEILING = 120
WHOLE_SECONDS = "a whole number of seconds from {low} to {high}"
_SWITCHES = (
    env.MLFLOW_HTTP_RESPECT_RETRY_AFTER_HEADER,
    env.MLFLOW_TRACKING_INSECURE_TLS,
    env.MLFLOW_HTTP_TCP_KEEPALIVE,
)
_SWITCH_WORDS = ("true", "false", "1", "0")


@dataclass(frozen=True)
class _Bounds:
    var: env.EnvVar
    low: float
    high: float
    accepted: str


def check_mlflow_http_variables(environ: Mapping[str, str]) -> None:
    """Raise ``InputError`` for an MLflow HTTP variable MLflow (or the upload) could not use; a
    variable left unset is checked with the value the tool sets for it (``settings.table``)."""
    for bounds in _bounds(environ):
        raw = environ.get(bounds.var.name)
        message = BAD_MLFLOW_HTTP_VARIABLE
        if raw is None:
            raw, message = BY_VARIABLE[bounds.var.name].default, BAD_MLFLOW_HTTP_DEFAULT
            if raw is None:
                continue
        number = _parsed(bounds.var.kind, raw)
        if number is None or not bounds.low <= number <= bounds.high:
            raise InputError(message.format(name=bounds.var.name, accepted=bounds.accepted, value=raw))
    for var in _SWITCHES:
        raw = environ.get(var.name)
        if raw is not None and raw.lower() not in _SWITCH_WORDS:
            accepted = "true or false (or 1 or 0)"
            raise InputError(BAD_MLFLOW_HTTP_VARIABLE.format(name=var.name, accepted=accepted, value=raw))


def _bounds(environ: Mapping[str, str]) -> tuple[_Bounds, ...]:
    retries = _ceiling(environ, env.MLFLOW_HTTP_REQUEST_MAX_RETRIES_LIMIT, MLFLOW_RETRIES_CEILING)
    backoff = _ceiling(environ, env.MLFLOW_HTTP_REQUEST_MAX_BACKOFF_FACTOR_LIMIT, MLFLOW_BACKOFF_CEILING)
    return (
        _Bounds(env.MLFLOW_HTTP_REQUEST_MAX_RETRIES, 0, retries, f"a whole number from 0 to {retries}"),
        _Bounds(env.MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR, 0, backoff, WHOLE_SECONDS.format(low=0, high=backoff)),
        _Bounds(env.MLFLOW_HTTP_REQUEST_BACKOFF_JITTER, 0, 3600, "a number of seconds from 0 to 3600"),
        _Bounds(env.MLFLOW_HTTP_REQUEST_TIMEOUT, 1, 1_000_000, WHOLE_SECONDS.format(low=1, high=1_000_000)),
        _Bounds(env.MLFLOW_HTTP_TCP_KEEPALIVE_IDLE, 1, 86_400, WHOLE_SECONDS.format(low=1, high=86_400)),
        _Bounds(env.MLFLOW_HTTP_TCP_KEEPALIVE_INTERVAL, 1, 86_400, WHOLE_SECONDS.format(low=1, high=86_400)),
        _Bounds(env.MLFLOW_HTTP_TCP_KEEPALIVE_COUNT, 1, 100, "a whole number from 1 to 100"),
    )


def _ceiling(environ: Mapping[str, str], var: env.EnvVar, mlflow_default: int) -> int:
    """MLflow's ceiling on a variable: its private variable's value, else MLflow's default."""
    raw = environ.get(var.name)
    if raw is None:
        return mlflow_default
    number = _parsed(int, raw)
    if number is None or number < 0:
        raise InputError(
            BAD_MLFLOW_HTTP_VARIABLE.format(name=var.name, accepted="a whole number, 0 or more", value=raw)
        )
    return int(number)


def _parsed(kind: type, raw: str) -> float | None:
    """``raw`` as MLflow converts it (``int("2.5")`` fails there too); None unless a finite number."""
    try:
        number = kind(raw)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if number == number and abs(number) != float("inf") else None
