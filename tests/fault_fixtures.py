"""Fixtures of the fault tests (tests/e2e/registration/test_fault_matrix.py). Loaded as a pytest plugin.

- ``fault_tally`` (session): the figures (faults injected, re-runs converged, versions duplicated,
  events lost), added up over every xdist worker and printed in pytest's terminal summary
  (tests/session_reports.py).
- ``own_mlflow`` (function): an MLflow server of the test's own, which it may kill and restart on the
  same port with the same backend database and artifact folder.
- ``pg_proxy`` (function): a ``TcpProxy`` in front of the test PostgreSQL server.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests import services as services_module
from tests import session_reports
from tests.faults import FaultTally, TcpProxy
from tests.services import MlflowServer, create_database, drop_database, start_mlflow_server


@pytest.fixture(scope="session")
def fault_tally() -> FaultTally:
    return session_reports.tally()


@dataclass
class OwnMlflow:
    """One MLflow server that a test may kill (SIGKILL, whole process group) and start again."""

    workdir: Path
    backend_url: str
    server: MlflowServer

    @property
    def url(self) -> str:
        return self.server.url

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.server.process.pid, signal.SIGKILL)
        self.server.process.wait(timeout=30)

    def restart(self) -> None:
        """Start again on the same port, backend database and artifact folder."""
        port = int(self.url.rsplit(":", 1)[1])
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(services_module, "free_port", lambda: port)
            self.server = start_mlflow_server(self.workdir, self.backend_url)

    def client(self) -> Any:
        import mlflow

        return mlflow.MlflowClient(tracking_uri=self.url, registry_uri=self.url)


@pytest.fixture
def own_mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnMlflow]:
    backend = create_database("hokusai_mlflow_own")
    workdir = tmp_path_factory.mktemp("own-mlflow")
    own = OwnMlflow(workdir, backend, start_mlflow_server(workdir, backend))
    try:
        yield own
    finally:
        own.server.stop()
        drop_database(backend)


@pytest.fixture
def pg_proxy(services: Any) -> Iterator[tuple[TcpProxy, str]]:
    """A breakable proxy in front of the test database, and the database URL through it."""
    url = sa.engine.make_url(services.database_url)
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432))
    try:
        yield proxy, url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    finally:
        proxy.close()
