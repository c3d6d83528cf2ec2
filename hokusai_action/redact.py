"""Keep secrets out of everything the tool prints.

Secret values are registered once, when settings are built, and every line that leaves the process
(error lines, log lines, tracebacks under ``--debug``, the action's summary) passes through
``redact``. URLs with an inline password are also rewritten, so a database URL copied into an error
message by a driver never shows its password.
"""

from __future__ import annotations

import logging
import re

MASK = "***"
_MIN_SECRET_LENGTH = 4  # masking "a" or "ab" would shred every line; such values are refused anyway

_secrets: set[str] = set()

# scheme://user:password@host  ->  scheme://user:***@host
# the password may hold a raw "/" (SQLAlchemy accepts postgresql://u:pa/ss@host/db); it ends at "@"
_URL_PASSWORD = re.compile(r"(?P<prefix>[A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@]*:)(?P<password>[^@\s]+)(?=@)")


def register_secret(value: str | None) -> None:
    """Remember a secret value so that ``redact`` masks it wherever it appears."""
    if value and len(value) >= _MIN_SECRET_LENGTH:
        _secrets.add(value)


def url_password(url: str | None) -> str | None:
    """The password inside ``scheme://user:password@host``, if there is one."""
    match = _URL_PASSWORD.search(url or "")
    return match.group("password") if match else None


def register_url_password(url: str | None) -> None:
    """Remember the password inside a URL on its own: drivers echo URLs in pieces."""
    register_secret(url_password(url))


def registered_secrets() -> frozenset[str]:
    return frozenset(_secrets)


def redact(text: str) -> str:
    """Return ``text`` with every registered secret and every URL password replaced by ``***``."""
    if not text:
        return text
    # longest first, so a secret that contains another is masked whole
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return _URL_PASSWORD.sub(lambda m: m.group("prefix") + MASK, text)


class RedactingFilter(logging.Filter):
    """A logging filter that passes every record's final text through ``redact``."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def install_log_redaction() -> None:
    """Redact every log line the process prints, whoever logs it (MLflow, drivers, our modules)."""
    root = logging.getLogger()
    for handler in root.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
