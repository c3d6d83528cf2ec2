"""How a setting's raw value (a flag, a variable's text, a ``hokusai.yaml`` value) becomes its value:
each parser takes the raw value and the name an error calls it by, and raises ``InputError`` with one
clear line when it cannot. Referenced by ``settings.table``; imports only ``errors``."""

from __future__ import annotations

from typing import Any

from hokusai_action.errors import InputError

EVENT_SINKS = ("pubsub", "webhook", "database")
MIN_RELAY_LEASE = 1.0  # seconds: a relay renews its lease every quarter of it
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off", ""})

BAD_NUMBER = "{name} must be a positive number of seconds, not '{value}'."
BAD_BOOL = "{name} must be true or false, not '{value}'."
RELAY_LEASE_TOO_SHORT = "{name} must be at least {low:g} second(s), not '{value}': a relay renews it every quarter."
UNKNOWN_SINK = "Unknown event sink '{sink}' in {where}. Choose any of: {known}."


def positive(value: Any, name: str) -> float:
    """A finite number above zero."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an integer past float's range
        raise InputError(BAD_NUMBER.format(name=name, value=value)) from None
    if not number > 0 or number == float("inf"):
        raise InputError(BAD_NUMBER.format(name=name, value=value))
    return number


def relay_lease(value: Any, name: str) -> float:
    """A relay's lease on a delivery, in seconds: renewed every quarter of it while the relay lives
    (also while a send is in flight), so it bounds only how long a killed relay's deliveries wait."""
    seconds = positive(value, name)
    if seconds < MIN_RELAY_LEASE:
        raise InputError(RELAY_LEASE_TOO_SHORT.format(name=name, low=MIN_RELAY_LEASE, value=value))
    return seconds


def boolean(value: Any, name: str) -> bool:
    """A bool, or a word for one (true/false, yes/no, on/off, 1/0)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise InputError(BAD_BOOL.format(name=name, value=value))


def text(value: Any, _name: str) -> str:
    """The value as text: a label or a margin that YAML may have read as a number."""
    return str(value)


def event_sinks(value: Any, _name: str) -> tuple[str, ...] | None:
    """A comma list (or a YAML list) of known sinks, each once, in order; None when it names none."""
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    sinks: list[str] = []
    for item in items:
        sink = str(item).strip().lower()
        if not sink:
            continue
        if sink not in EVENT_SINKS:
            raise InputError(UNKNOWN_SINK.format(sink=sink, where="event sinks", known=", ".join(EVENT_SINKS)))
        if sink not in sinks:
            sinks.append(sink)
    return tuple(sinks) or None
