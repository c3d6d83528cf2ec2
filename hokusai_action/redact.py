"""Keep secrets out of everything the tool prints.

Secret values are registered once, when settings are built, and every line that leaves the process
(error lines, log lines, tracebacks under ``--debug``, the action's summary, and what MLflow,
SQLAlchemy, Alembic or the Google client print on their own) passes through ``redact``.

Two nets, so that one miss is not a leak:
- every registered secret is masked in its raw form and in every percent-encoded form (each
  character either raw or ``%XX``, upper or lower case, or ``%25XX`` when encoded twice): a password
  with ``@:/%`` in it reaches a URL encoded, and SQLAlchemy re-encodes only ``:@/``; and so are its
  stripped form and the forms it takes once quoted, by ``repr`` (a library quotes a value it refuses:
  requests' "... in header value: 'Bearer tok\\n'") or by JSON; and basic-auth credentials are
  registered as the base64 of ``user:password`` their ``Authorization`` header carries;
- the user-info of every URL is rewritten without registration: ``https://TOKEN@host`` and
  ``https://user:password@host`` become ``https://***@host`` (a user name in a tracking URI is half a
  credential, and a token is often passed as the user). Database URLs keep their role name
  (``postgresql://hokusai:***@db``): drivers print it anyway and it tells the reader which login failed.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import json
import logging
import re
import sys
import threading
import warnings
from typing import Any, TextIO
from urllib.parse import unquote

MASK = "***"
_MIN_SECRET_LENGTH = 4  # masking "a" or "ab" would shred every line; such values are refused anyway
WEBHOOK_SECRET_PREFIX = "whsec_"  # Standard Webhooks: the base64 body after it is the key itself

_secrets: set[str] = set()
_compiled: tuple[frozenset[str], re.Pattern[str] | None] = (frozenset(), None)

# scheme://[user][:password]@   The password may hold a raw "/" (SQLAlchemy accepts
# postgresql://u:pa/ss@host/db) and a raw "@" when what follows it is not a path: it ends at the last "@".
_URL_USERINFO = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)"
    r"(?P<user>[^\s/?#@:]*)"
    r"(?::(?P<password>[^\s@]*(?:@[^\s@/?#]*)*))?"
    r"@"
)
# schemes whose user is a role name, not a credential (SQLAlchemy dialects, with or without +driver)
_ROLE_SCHEMES = re.compile(
    r"(?:postgres|postgresql|mysql|mariadb|mssql|oracle|sqlite|cockroachdb|redshift|snowflake)(?:\+[\w.-]+)?://",
    re.IGNORECASE,
)


def _quoted_forms(value: str) -> set[str]:
    """``value`` as it reads inside a quoted string: a ``repr`` (which escapes a backslash and every
    character that is not printable, and a quote only when the string holds both kinds) or JSON."""
    escaped = "".join(char if char in "'\"" else repr(char)[1:-1] for char in value)
    return {
        escaped,
        escaped.replace("'", "\\'"),
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
    }


def _forms(value: str) -> set[str]:
    """The values a secret is also known by: its percent-decoded and stripped forms, and a webhook
    key's body; each also as it reads quoted (``_quoted_forms``)."""
    forms = {value, unquote(value), value.strip()}
    stripped = value.strip()
    if stripped.startswith(WEBHOOK_SECRET_PREFIX):
        body = stripped[len(WEBHOOK_SECRET_PREFIX) :]
        forms |= {body, body.rstrip("=")}
        with contextlib.suppress(binascii.Error, ValueError):  # the same key in base64url, as some print it
            forms.add(base64.urlsafe_b64encode(base64.b64decode(body + "=" * (-len(body) % 4))).decode().rstrip("="))
    forms |= {quoted for form in forms for quoted in _quoted_forms(form)}
    return {form for form in forms if len(form) >= _MIN_SECRET_LENGTH}


def register_secret(value: str | None) -> None:
    """Remember a secret value so that ``redact`` masks it wherever it appears, encoded or not."""
    if value and len(value) >= _MIN_SECRET_LENGTH:
        _secrets.update(_forms(value))


def register_basic_credentials(user: str | None, password: str | None) -> None:
    """Remember the base64 of ``user:password`` that HTTP basic auth sends (RFC 7617), padded and not.

    ``requests`` encodes text credentials as Latin-1; a client may use UTF-8: both are registered.
    The user name alone is not (see ``register_url_password``).
    """
    if not user and not password:
        return
    pair = f"{user or ''}:{password or ''}"
    for encoding in ("latin-1", "utf-8"):
        try:
            encoded = base64.b64encode(pair.encode(encoding)).decode("ascii")
        except UnicodeEncodeError:
            continue
        _secrets.update(form for form in (encoded, encoded.rstrip("=")) if len(form) >= _MIN_SECRET_LENGTH)


def url_password(url: str | None) -> str | None:
    """The password inside ``scheme://user:password@host`` (as written, still percent-encoded)."""
    match = _URL_USERINFO.search(url or "")
    return match.group("password") if match and match.group("password") else None


def url_user(url: str | None) -> str | None:
    match = _URL_USERINFO.search(url or "")
    return match.group("user") if match and match.group("user") else None


def register_url_password(url: str | None) -> None:
    """Remember the credentials inside a URL on their own: drivers and libraries echo URLs in pieces.

    The password counts (raw and decoded). A user without a password counts too, outside database
    URLs: ``https://TOKEN@host`` passes a token as the user. A user beside a password is not
    registered (it may be an ordinary word like "admin"); inside a URL it is masked all the same.
    Outside database URLs the basic-auth header the pair becomes is registered as well.
    """
    password = url_password(url)
    register_secret(password)
    if url and not _ROLE_SCHEMES.match(url.strip()):
        if password is None:
            register_secret(url_user(url))
        # requests sends a URL's user-info, percent-decoded, as basic auth (a user alone as "user:")
        user = url_user(url)
        if user or password:
            register_basic_credentials(unquote(user or ""), unquote(password or ""))


def registered_secrets() -> frozenset[str]:
    return frozenset(_secrets)


def _char_pattern(char: str) -> str:
    encoded = [f"{byte:02X}" for byte in char.encode("utf-8")]
    alternatives = [re.escape(char)]
    for prefix in ("%", "%25"):  # encoded once, or twice (a URL inside a query string)
        for case in (str.upper, str.lower):
            alternatives.append("".join(prefix + case(h) for h in encoded))
    if char == " ":
        alternatives.append(r"\+")
    return "(?:" + "|".join(dict.fromkeys(alternatives)) + ")"


def _secret_pattern() -> re.Pattern[str] | None:
    global _compiled
    current = frozenset(_secrets)
    if current != _compiled[0]:
        # longest first, so a secret that contains another is masked whole
        ordered = sorted(current, key=len, reverse=True)
        pattern = "|".join("".join(_char_pattern(c) for c in secret) for secret in ordered)
        _compiled = (current, re.compile(pattern) if pattern else None)
    return _compiled[1]


def _mask_userinfo(match: re.Match[str]) -> str:
    scheme = match.group("scheme")
    if _ROLE_SCHEMES.match(scheme):
        if match.group("password") is None:
            return match.group(0)  # postgresql://hokusai@db: a role name, no credential
        return f"{scheme}{match.group('user')}:{MASK}@"
    return f"{scheme}{MASK}@"


def redact(text: str) -> str:
    """Return ``text`` with every registered secret and every URL credential replaced by ``***``."""
    if not text:
        return text
    pattern = _secret_pattern()
    if pattern is not None:
        text = pattern.sub(MASK, text)
    return _URL_USERINFO.sub(_mask_userinfo, text)


class RedactingFilter(logging.Filter):
    """A logging filter that passes every record's final text through ``redact``."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install_log_redaction() -> None:
    """Redact every log line the process prints, whoever logs it (MLflow, drivers, our modules).

    Handlers on the root logger and on every logger created so far (MLflow installs its own handler
    and stops propagation) get the filter; output written straight to the streams is caught by
    ``RedactingStream`` (see ``redact_standard_streams``).
    """
    loggers: list[Any] = [logging.getLogger()]
    loggers += [lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    for logger in loggers:
        for handler in logger.handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(RedactingFilter())


# GitHub's runner consumes these lines and never shows them; they must carry the secret itself
_PASS_THROUGH = ("::add-mask::",)


class RedactingStream(io.TextIOBase):
    """A text stream that redacts whole lines before they reach ``inner``.

    Vendors print to ``sys.stdout``/``sys.stderr`` directly (MLflow's "View run ... at: <uri>",
    warnings, progress bars). Writes are buffered up to the end of a line (or a carriage return) so
    that a secret split across two ``write`` calls is still masked whole.
    """

    def __init__(self, inner: TextIO) -> None:
        super().__init__()
        self.inner = inner
        # one partial line per thread (upload, delivery and preflight threads print side by side):
        # a line another thread finishes meanwhile must not cut this one's secret in two
        self._pending: dict[int, str] = {}
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        me = threading.get_ident()
        with self._lock:
            pending = self._pending.pop(me, "") + text
            cut = max(pending.rfind("\n"), pending.rfind("\r"))
            if cut >= 0:
                complete, pending = pending[: cut + 1], pending[cut + 1 :]
                self.inner.write(self._redact_lines(complete))
            if pending:
                self._pending[me] = pending
        return len(text)

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = "".join(self._pending.values()), {}
            if pending:
                self.inner.write(self._redact_lines(pending))
            self.inner.flush()

    @staticmethod
    def _redact_lines(text: str) -> str:
        lines = text.splitlines(keepends=True)
        return "".join(line if line.startswith(_PASS_THROUGH) else redact(line) for line in lines)

    def isatty(self) -> bool:
        return self.inner.isatty()

    def fileno(self) -> int:
        return self.inner.fileno()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.inner, "encoding", "utf-8")

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return getattr(self.inner, "errors", None)


def _redacting_showwarning(message, category, filename, lineno, file=None, line=None) -> None:
    out = file if file is not None else sys.stderr
    if out is None:
        return
    with contextlib.suppress(OSError):  # as warnings.showwarning: a closed stream loses the warning
        out.write(redact(warnings.formatwarning(message, category, filename, lineno, line)))


def redact_standard_streams() -> None:
    """Route everything written to ``sys.stdout``/``sys.stderr`` and every warning through ``redact``.

    Idempotent. Output written to file descriptors 1 and 2 below Python (C extensions, child
    processes) is not seen here; nothing we start writes secrets there.
    """
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, RedactingStream):
            setattr(sys, name, RedactingStream(stream))
    warnings.showwarning = _redacting_showwarning
    # handlers built before the swap hold the original streams: filter what they print as well
    install_log_redaction()
