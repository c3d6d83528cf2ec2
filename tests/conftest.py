"""Shared fixtures: real services (session) and factories (per test). See tests/README.md."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.canaries import CANARIES, CanaryWatch
from tests.helpers import cli_command, embedded_env, run_captured
from tests.services import Services, session_services
from tests.upload_proxy import UploadProxy

# Google's Pub/Sub emulator and fake-gcs-server: session fixtures, skipped loudly where not installed;
# session_reports prints what they (and the fault matrix) report, gathered from every xdist worker
pytest_plugins = ["tests.session_reports", "tests.pubsub_emulator", "tests.gcs_emulator", "tests.fault_fixtures"]

REPO = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------------ services


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    """The real services; the MLflow URL carries canary credentials (the server has no auth)."""
    for plain in session_services(tmp_path_factory.mktemp("services")):
        yield dataclasses.replace(plain, mlflow_url=CANARIES.tracking_uri(plain.mlflow_url))


@pytest.fixture(scope="session")
def database(services: Services):
    from hokusai_action.db.store import Database

    # trust auth accepts any password: the canary one, with @:/% in it, exercises every escape
    db = Database(CANARIES.database_url(services.database_url), timeout=5)
    db.upgrade()
    yield db
    db.dispose()


@pytest.fixture(scope="session")
def mlflow_client(services: Services):
    import mlflow

    # models:/ URIs resolve through the global registry URI, so point it at the test server too
    mlflow.set_tracking_uri(services.mlflow_url)
    mlflow.set_registry_uri(services.mlflow_url)
    return mlflow.MlflowClient(tracking_uri=services.mlflow_url, registry_uri=services.mlflow_url)


# -------------------------------------------------------------------------------------- canaries


@pytest.fixture(autouse=True)
def canary_watch(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[CanaryWatch]:
    """Fail the test if a canary secret shows up in anything it captured (see tests/canaries.py)."""
    watch = CanaryWatch()
    run = subprocess.run

    def recording_run(*args: Any, **kwargs: Any) -> subprocess.CompletedProcess:
        done = run(*args, **kwargs)
        watch.record_process(done.args, done.stdout, done.stderr, kwargs.get("env"))
        return done

    monkeypatch.setattr(subprocess, "run", recording_run)
    for name in ("capsys", "capfd"):
        if name in request.fixturenames:
            capture = request.getfixturevalue(name)
            read = capture.readouterr

            def recording_read(read=read, name=name):
                captured = read()
                watch.record(f"{name} stdout", captured.out)
                watch.record(f"{name} stderr", captured.err)
                return captured

            monkeypatch.setattr(capture, "readouterr", recording_read)
    services = request.getfixturevalue("services") if "services" in request.fixturenames else None
    database = request.getfixturevalue("database") if "database" in request.fixturenames else None

    yield watch

    for when, key, text in getattr(request.node, "_report_sections", []):
        watch.record(f"captured {key} ({when})", text)
    if database is not None:
        touched = watch.scan_database(database)
        if services is not None:
            watch.scan_mlflow(services.mlflow_url, touched)
    leaks = watch.leaks()
    if leaks:
        pytest.fail("a canary secret leaked:\n  " + "\n  ".join(leaks), pytrace=False)


@pytest.fixture
def webhook_secret() -> str:
    """The webhook signing secret tests should use: a canary that must never be printed."""
    return CANARIES.webhook_secret


# ----------------------------------------------------------------------------------- factories


@pytest.fixture
def make_token(database) -> Callable[..., str]:
    """Create a draft token with a unique symbol (or the given one) and return its symbol."""
    from hokusai_action.db.store import insert_token

    def make(symbol: str | None = None) -> str:
        token_id = symbol or f"T{uuid.uuid4().hex[:10]}".upper()
        with database.unit_of_work() as uow:
            insert_token(uow, token_id)
            uow.commit()
        return token_id

    return make


@pytest.fixture
def make_model(tmp_path: Path) -> Callable[..., Path]:
    """A model directory with real bytes and a metrics.json (or a single file with kind='file')."""

    def make(
        *,
        metrics: dict[str, Any] | None = None,
        files: dict[str, bytes] | None = None,
        kind: str = "dir",
        name: str | None = None,
    ) -> Path:
        root = tmp_path / (name or f"model-{uuid.uuid4().hex[:6]}")
        if kind == "file":
            root.parent.mkdir(parents=True, exist_ok=True)
            root.write_bytes(os.urandom(4096))
            return root
        root.mkdir(parents=True)
        for relative, content in (files or {"weights.bin": os.urandom(64 * 1024), "config/params.json": b"{}"}).items():
            target = root / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        if metrics is not False:
            (root / "metrics.json").write_text(json.dumps(metrics if metrics is not None else {"auroc": 0.91}))
        return root

    return make


@pytest.fixture(scope="session")
def saved_models(tmp_path_factory) -> dict[str, Path]:
    """One model per flavor, saved once per session (saving imports scikit-learn: seconds)."""
    from tests.mlflow_models import FLAVORS, save_mlflow_model

    root = tmp_path_factory.mktemp("mlflow-models")
    return {flavor: save_mlflow_model(flavor, root / flavor) for flavor in FLAVORS}


@pytest.fixture
def mlflow_model(saved_models, tmp_path):
    """``mlflow_model(flavor, metrics=None)``: a fresh copy of a saved model, plus a file of random bytes
    so that each copy is a registration of its own (a token holds one model), and ``metrics.json`` when
    ``metrics`` is given."""

    def copy(flavor: str, *, metrics: dict[str, float] | None = None) -> Path:
        target = tmp_path / f"{flavor}-{len(list(tmp_path.glob(flavor + '-*')))}"
        shutil.copytree(saved_models[flavor], target)
        (target / "training-run.txt").write_bytes(os.urandom(32).hex().encode())
        if metrics is not None:
            (target / "metrics.json").write_text(json.dumps(metrics))
        return target

    return copy


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str
    args: tuple[str, ...] = ()  # the command line, so a check knows whether it asked for --output json

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@pytest.fixture
def cli_env(services: Services, database, tmp_path: Path) -> dict[str, str]:
    """The environment a user would set: the real MLflow server and PostgreSQL, nothing else."""
    env = embedded_env(tmp_path)
    env.update(
        MLFLOW_TRACKING_URI=services.mlflow_url,
        MLFLOW_TRACKING_TOKEN=CANARIES.tracking_token,
        HOKUSAI_DATABASE_URL=CANARIES.database_url(services.database_url),
        HOKUSAI_WEBHOOK_SECRET=CANARIES.webhook_secret,
        HOKUSAI_HOME=str(tmp_path / ".hokusai"),
    )
    return env


@pytest.fixture
def run_cli(cli_env: dict[str, str], tmp_path: Path) -> Callable[..., CliResult]:
    """Run ``hokusai-ml-platform ARGS`` as a subprocess, as a user would."""

    def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 300) -> CliResult:
        done = run_captured(cli_command(*args), env={**cli_env, **(env or {})}, cwd=cwd or tmp_path, timeout=timeout)
        return CliResult(done.returncode, done.stdout, done.stderr, args)

    return run


@dataclass(frozen=True)
class Snapshot:
    token: dict[str, Any] | None
    versions: tuple[str, ...]
    events: int
    deliveries: tuple[tuple[str, str, str], ...]


@pytest.fixture
def proxy_for(services: Services) -> Iterator[Callable[..., UploadProxy]]:
    """``proxy_for(mode, **options)``: an ``UploadProxy`` before the session's MLflow server, closed after."""
    proxies: list[UploadProxy] = []

    def start(mode: str, **kwargs: Any) -> UploadProxy:
        proxies.append(UploadProxy(services.mlflow_url, mode=mode, **kwargs))
        return proxies[-1]

    yield start
    for proxy in proxies:
        proxy.close()


@pytest.fixture
def snapshot(database, mlflow_client) -> Callable[[str], Snapshot]:
    """What a user would check to see that nothing changed: the row, the versions, the events."""
    import sqlalchemy as sa

    from hokusai_action.db.schema import event_deliveries, events
    from hokusai_action.db.store import get_token

    def take(token_id: str) -> Snapshot:
        with database.unit_of_work() as uow:
            token = get_token(uow, token_id)
            event_count = uow.execute(
                sa.select(sa.func.count()).select_from(events).where(events.c.token_id == token_id)
            ).scalar_one()
            deliveries = uow.execute(
                sa.select(event_deliveries.c.event_id, event_deliveries.c.sink, event_deliveries.c.status)
                .join(events, events.c.event_id == event_deliveries.c.event_id)
                .where(events.c.token_id == token_id)
            ).all()
        versions = mlflow_client.search_model_versions(f"name = 'hokusai-{token_id}'")
        row = token.as_dict() if token else None
        return Snapshot(
            token=row,
            versions=tuple(sorted(v.version for v in versions)),
            events=event_count,
            deliveries=tuple(sorted((str(e), s, st) for e, s, st in deliveries)),
        )

    return take
