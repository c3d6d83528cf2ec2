"""Hashing the model when its digest decides the registration's path (a re-run, a dry run, a claim
left behind): a first registration instead hashes its bytes while they upload, reading them once.
"""

from __future__ import annotations

from dataclasses import replace
from types import TracebackType

from hokusai_action.digest.background import BackgroundHash
from hokusai_action.digest.files import (
    ModelFiles,
    Progress,
)
from hokusai_action.digest.hashing import hash_model
from hokusai_action.registration.parts import ProgressReporter, ShownTask
from hokusai_action.registration.request import RegistrationRequest


class EarlyHash:
    """The model's hash as a context manager, started before it is known to be needed: beside the
    database's first round trips. ``result()`` waits for it; otherwise it is cancelled on the way out
    (the upload will hash) and its progress task closed as not completed.

    ``prefetched`` is the hash the command started before its imports: taken over when it hashes this
    very walk of the model, cancelled otherwise.
    """

    def __init__(
        self, model: ModelFiles, *, progress: ProgressReporter | None, prefetched: BackgroundHash | None = None
    ) -> None:
        self._model = model
        self._shown = ShownTask(None if model.hashed else progress, "hashed", model=model)
        self._background = _start(model, task=self._shown.task, prefetched=prefetched)

    def __enter__(self) -> EarlyHash:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._background is not None:
            self._background.cancel()  # done already when result() waited for it
        self._shown.close(completed=False)  # closed already when result() waited for it

    def result(self) -> ModelFiles:
        """The model with its digest, once hashed."""
        if self._background is None:
            return self._model
        with self._shown:
            return self._background.result()


def _start(model: ModelFiles, *, task: Progress | None, prefetched: BackgroundHash | None) -> BackgroundHash | None:
    if model.hashed:
        if prefetched is not None:
            prefetched.cancel()
        return None
    if prefetched is not None and prefetched.model is model:
        if task is not None:
            prefetched.attach(task)
        return prefetched
    if prefetched is not None:  # another walk of the model: not what this request will register
        prefetched.cancel()
    return BackgroundHash(model, task)


def hashed(request: RegistrationRequest, progress: ProgressReporter | None) -> RegistrationRequest:
    """``request`` with its model hashed, here and now."""
    if request.model.hashed:
        return request
    with ShownTask(progress, "hashed", model=request.model) as shown:
        model = hash_model(request.model, shown.task)
    return replace(request, model=model)
