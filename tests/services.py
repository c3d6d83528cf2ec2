"""Real services for the tests: a fresh PostgreSQL database and a real ``mlflow server``.

PostgreSQL is the machine's server (127.0.0.1:5432, trust auth; ``.ci/run`` starts it when it is
down). MLflow is started here on a free loopback port with a SQL backend and ``--serve-artifacts``,
exactly as a team would run it, and stopped by its process group at the end of the session.
``start_mlflow_server`` also starts the production topologies: artifacts in a ``gs://`` bucket,
proxied by the server or written by the client (tests/e2e/mlflow/test_gcs_topology.py).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

PG_ADMIN_URL = os.environ.get("HOKUSAI_TEST_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def create_database(prefix: str) -> str:
    """A fresh, uniquely named database on the test server; returns its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        pytest.exit(f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {exc.orig}. Start it (see .ci/run).", 3)
    finally:
        admin.dispose()
    return sa.engine.make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    name = sa.engine.make_url(url).database
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@dataclass
class MlflowServer:
    url: str
    backend_url: str
    artifacts: Path | str  # the local artifact folder, or the gs:// URI the server writes to / points at
    process: subprocess.Popen
    log_path: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=15)


def start_mlflow_server(
    workdir: Path,
    backend_url: str,
    *,
    artifact_store: str | None = None,
    proxied: bool = True,
    env: Mapping[str, str] | None = None,
) -> MlflowServer:
    """Start ``mlflow server`` on a free loopback port and wait for ``/health``.

    The default is the topology the suite grew up on: ``--serve-artifacts`` onto a local folder.
    With ``artifact_store`` (e.g. ``gs://bucket/prefix``) the artifacts live there instead, either
    proxied through the server (``--serve-artifacts --artifacts-destination``) or, with
    ``proxied=False``, written by the client itself (``--no-serve-artifacts --default-artifact-root``).
    ``env`` adds to the server's environment (``STORAGE_EMULATOR_HOST``, multipart settings).
    """
    port = free_port()
    # the default keeps its old log name; other topologies may share a workdir with it
    default = artifact_store is None and proxied and not env
    log_path = workdir / ("mlflow-server.log" if default else f"mlflow-server-{port}.log")
    if artifact_store is None:
        local = workdir / "mlartifacts"
        local.mkdir(parents=True, exist_ok=True)
        artifacts: Path | str = local
        artifact_store = local.as_uri()
    else:
        artifacts = artifact_store
    if proxied:
        artifact_args = ["--serve-artifacts", "--artifacts-destination", artifact_store]
    else:
        artifact_args = ["--no-serve-artifacts", "--default-artifact-root", artifact_store]
    server_env = {
        **os.environ,
        # 2 cores: without this the server starts 7 extra job workers (~2.4 GB)
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        **(env or {}),
    }
    server_env.pop("MLFLOW_TRACKING_URI", None)
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                str(mlflow_bin),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--backend-store-uri",
                backend_url,
                *artifact_args,
                "--workers",
                "2",
            ],
            cwd=workdir,
            env=server_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = MlflowServer(f"http://127.0.0.1:{port}", backend_url, artifacts, process, log_path)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            if requests.get(f"{server.url}/health", timeout=1).status_code == 200:
                return server
        except requests.RequestException:
            pass
        time.sleep(0.25)
    server.stop()
    raise RuntimeError(f"mlflow server did not answer /health in 90 s:\n{log_path.read_text()[-3000:]}")


@dataclass
class Services:
    database_url: str
    mlflow_url: str


def session_services(tmp_root: Path) -> Iterator[Services]:
    database_url = create_database("hokusai_test")
    mlflow_backend = create_database("hokusai_mlflow")
    server = start_mlflow_server(tmp_root, mlflow_backend)
    try:
        yield Services(database_url=database_url, mlflow_url=server.url)
    finally:
        server.stop()
        drop_database(database_url)
        drop_database(mlflow_backend)
