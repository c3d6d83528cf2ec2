"""Canary secrets in every credential the tests use, and the checker that looks for them afterwards.

``tests/conftest.py`` puts these values into the tracking URI's user-info, ``MLFLOW_TRACKING_TOKEN``,
the database password (with ``@:/%`` in it) and the webhook signing secret, and its one autouse
fixture fails any test after which a canary shows up in what the test captured: its own
stdout/stderr and logs, every subprocess it ran (``run_cli``, the entrypoint), the GitHub output and
summary files those processes were given, the events rows and delivery errors of the tokens it
touched, and the MLflow versions, runs and logged models of those tokens. A canary counts raw or in
any percent-encoding (each character raw or ``%XX``, once or twice), and as it reads quoted by
``repr`` or JSON (the tracking token holds a backslash, so that its quoted form differs from it);
the tracking URI's user and password also count as the base64 of ``user:password`` that basic auth
sends. A canary printed with a newline after it (``'Bearer TOKEN\\n'``) holds the canary itself.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

MAX_FILE_BYTES = 1_000_000  # runner files are small; a model file is never scanned

# the runner consumes these lines to mask the value; it never shows them
ADD_MASK = "::add-mask::"


@dataclass(frozen=True)
class Canaries:
    uri_user: str = "cnry-uri-user-7f3a"
    uri_password: str = "cnry-uri-pass-7f3a"
    # a backslash: repr and JSON double it, so a quoted leak is not the raw value
    tracking_token: str = "cnry-mlflow-token\\7f3a"
    # PostgreSQL on 127.0.0.1 trusts every login, so any password works; this one needs escaping
    database_password: str = "cnry@:/%-db-pass-7f3a"
    webhook_key: bytes = b"cnry-webhook-signing-key-7f3a-32"  # 32 bytes, as Standard Webhooks wants
    # the private scalar of the P-256 signing key the tests use (--sign key/certificate): its PEM is a canary
    signing_key_scalar: int = 0x7F3A_C0FF_EE15_DEAD_BEEF_0123_4567_89AB_CDEF_7F3A_C0FF_EE15_DEAD_BEEF_0042

    @property
    def signing_key_pem(self) -> str:
        return _signing_key_pem(self.signing_key_scalar)

    @property
    def webhook_secret(self) -> str:
        return "whsec_" + base64.b64encode(self.webhook_key).decode()

    @property
    def basic_credentials(self) -> str:
        """The tracking URI's user-info as requests sends it: ``Authorization: Basic <this>``."""
        return base64.b64encode(f"{self.uri_user}:{self.uri_password}".encode()).decode()

    def values(self) -> tuple[str, ...]:
        body = self.webhook_secret.removeprefix("whsec_")
        return (
            self.uri_user,
            self.uri_password,
            self.tracking_token,
            self.database_password,
            self.webhook_secret,
            body.rstrip("="),
            self.webhook_key.decode(),
            self.basic_credentials.rstrip("="),
            # the PEM's body lines hold the private scalar (its first line's tail, its second line)
            *self.signing_key_pem.splitlines()[1:3],
        )

    def tracking_uri(self, url: str) -> str:
        """``http://host:port`` -> ``http://USER:PASSWORD@host:port`` (the test server has no auth)."""
        scheme, rest = url.split("://", 1)
        return f"{scheme}://{self.uri_user}:{self.uri_password}@{rest.split('@')[-1]}"

    def database_url(self, url: str) -> str:
        """The same database, logging in with the canary password, percent-encoded as SQLAlchemy needs."""
        import sqlalchemy as sa

        scheme, rest = url.split("://", 1)
        user, host = rest.split("@", 1)
        with_password = f"{scheme}://{user.split(':')[0]}:{quote(self.database_password, safe='')}@{host}"
        assert sa.engine.make_url(with_password).password == self.database_password
        return with_password


@functools.cache
def _signing_key_pem(scalar: int) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.derive_private_key(scalar, ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


CANARIES = Canaries()


def quoted_forms(canary: str) -> set[str]:
    """``canary`` as it reads inside a ``repr`` (single- or double-quoted) or a JSON string."""
    escaped = "".join(char if char in "'\"" else repr(char)[1:-1] for char in canary)
    return {canary, escaped, escaped.replace("'", "\\'"), json.dumps(canary)[1:-1]}


def find_canaries(text: str, canaries: Iterable[str] = CANARIES.values()) -> list[str]:
    """The canaries in ``text``, raw, percent-encoded or quoted; ``::add-mask::`` lines are the runner's."""
    if not text:
        return []
    shown = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith(ADD_MASK))
    decoded_once = unquote(shown)
    readings = (shown, decoded_once, unquote(decoded_once))
    return [
        canary for canary in canaries if any(form in reading for form in quoted_forms(canary) for reading in readings)
    ]


@dataclass
class CanaryWatch:
    """What one test captured, scanned for canaries when it ends."""

    started: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC) - dt.timedelta(seconds=2))
    texts: list[tuple[str, str]] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    def record(self, where: str, text: Any) -> None:
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        if text:
            self.texts.append((where, str(text)))

    def record_process(self, args: Any, stdout: Any, stderr: Any, env: dict[str, str] | None) -> None:
        name = " ".join(str(a) for a in args[:4]) if isinstance(args, list | tuple) else str(args)
        self.record(f"stdout of `{name}`", stdout)
        self.record(f"stderr of `{name}`", stderr)
        for variable in ("GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY"):
            if env and env.get(variable):
                self.files.append(Path(env[variable]))

    def leaks(self) -> list[str]:
        """One line per (place, canary) found; empty when nothing leaked."""
        found = []
        for path in dict.fromkeys(self.files):
            if path.is_file() and path.stat().st_size <= MAX_FILE_BYTES:
                self.record(f"file {path.name}", path.read_bytes())
        for where, text in self.texts:
            found += [f"{where}: {canary!r}" for canary in find_canaries(text)]
        return found

    # ------------------------------------------------------------------------ stored by services

    def scan_database(self, database: Any) -> list[str]:
        """Record the events rows and delivery errors of every token created or changed in this test."""
        import sqlalchemy as sa

        from hokusai_action.db.schema import event_deliveries, events, tokens

        with database.unit_of_work() as uow:
            touched = [
                row.token_id
                for row in uow.execute(
                    sa.select(tokens.c.token_id).where(
                        sa.or_(tokens.c.created_at >= self.started, tokens.c.updated_at >= self.started)
                    )
                )
            ]
            if touched:
                for row in uow.execute(sa.select(events).where(events.c.token_id.in_(touched))):
                    self.record(f"events row {row.event_id}", json.dumps(dict(row._mapping), default=str))
                for row in uow.execute(
                    sa.select(event_deliveries.c.event_id, event_deliveries.c.sink, event_deliveries.c.last_error)
                    .join(events, events.c.event_id == event_deliveries.c.event_id)
                    .where(events.c.token_id.in_(touched))
                ):
                    self.record(f"delivery {row.event_id}/{row.sink} last_error", row.last_error)
                for row in uow.execute(sa.select(tokens).where(tokens.c.token_id.in_(touched))):
                    self.record(f"tokens row {row.token_id}", json.dumps(dict(row._mapping), default=str))
        return touched

    def scan_mlflow(self, mlflow_url: str, token_ids: Iterable[str]) -> None:
        """Record every version of the touched tokens' models, with its run and logged model (REST)."""
        import requests

        api = mlflow_url.rstrip("/") + "/api/2.0/mlflow"
        for token_id in token_ids:
            answer = requests.get(
                f"{api}/model-versions/search", params={"filter": f"name = 'hokusai-{token_id}'"}, timeout=10
            )
            self.record(f"MLflow versions of hokusai-{token_id}", answer.text)
            for version in answer.json().get("model_versions", []) if answer.ok else []:
                if version.get("run_id"):
                    run = requests.get(f"{api}/runs/get", params={"run_id": version["run_id"]}, timeout=10)
                    self.record(f"MLflow run {version['run_id']}", run.text)
                if version.get("model_id"):
                    logged = requests.get(f"{api}/logged-models/{version['model_id']}", timeout=10)
                    self.record(f"MLflow logged model {version['model_id']}", logged.text)
