"""What the registration is handed besides the database and the sinks: the MLflow registry, as the
calls the core makes on it, and a progress reporter; and a progress task as a context manager.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Protocol

from hokusai_action.digest.files import ModelFiles, Progress
from hokusai_action.domain.metrics import Champion, Metric
from hokusai_action.domain.versions import RegisteredVersion
from hokusai_action.progress import TaskStats


class Registry(Protocol):
    def check_reachable(self) -> str | None: ...

    def find_version(self, model_name: str, digest: str) -> RegisteredVersion | None: ...

    def upload_and_register(
        self,
        model: ModelFiles,
        *,
        model_name: str,
        token_id: str,
        tags: Mapping[str, str],
        params: Mapping[str, str],
        metric_name: str,
        metric_value: float,
        progress: Progress | None = None,
    ) -> RegisteredVersion: ...

    def run_metric(self, run_id: str, metric: Metric) -> tuple[float, str]: ...

    def champion(self, model_name: str, alias: str, metric: Metric) -> Champion: ...

    def set_alias(self, model_name: str, alias: str, version: str) -> None: ...

    def upload_signature(self, run_id: str, folder: Path, artifact_path: str) -> str: ...

    def set_version_tags(self, model_name: str, version: str, tags: Mapping[str, str]) -> None: ...


class ProgressTask(Progress, Protocol):
    def close(self, *, completed: bool = True) -> TaskStats: ...


class ProgressReporter(Protocol):
    """Shows long hashing and uploads (``hokusai_action.progress``); built in ``wiring``."""

    def task(self, verb: str, *, total_bytes: int, total_files: int) -> ProgressTask: ...


class ShownTask:
    """One progress task over ``model`` as a context manager: closed on the way out, as completed only
    when the block finished (a failed upload prints no end line), and ``stats`` is then what it
    counted. Without a reporter there is no task (``task`` is None) and no stats."""

    def __init__(self, progress: ProgressReporter | None, verb: str, *, model: ModelFiles) -> None:
        self.task = (
            progress.task(verb, total_bytes=model.total_bytes, total_files=len(model.files))
            if progress is not None
            else None
        )
        self.stats: TaskStats | None = None
        self._closed = False

    def __enter__(self) -> ShownTask:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close(completed=exc_type is None)

    def close(self, *, completed: bool) -> None:
        """Close the task once; a later call (the block's end after an early close) changes nothing."""
        if self.task is not None and not self._closed:
            self._closed = True
            self.stats = self.task.close(completed=completed)
