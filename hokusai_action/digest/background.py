"""The hash started before it is known to be needed: a thread that walks and hashes the model while a
registration imports its clients and reads the database.

Light to import on purpose: ``prefetch_digest`` runs before the registration's heavy imports
(SQLAlchemy, MLflow), so this module and what it imports use the standard library and the leaves only.
"""

from __future__ import annotations

import os
import threading

from hokusai_action.digest.files import ModelFiles, Progress
from hokusai_action.digest.hashing import HashCancelled, hash_model
from hokusai_action.digest.walk import scan_model


class BackgroundHash:
    """``hash_model`` in a thread, started before it is known to be needed.

    A re-run learns that it must hash (the token is registered) only after it has read the database;
    hashing meanwhile overlaps the imports of the database and MLflow clients and the database's round
    trips (hashlib releases the GIL). A first registration cancels it at once: its bytes are hashed
    while they upload. Progress may be attached later (``attach``): what was hashed before is reported
    to it then.

    Built from a path (``prefetch_digest``), the thread walks the model first: ``walked()`` waits for
    the walk and gives its ``ModelFiles``, or raises what the walk raised, when the caller gets to it.
    """

    def __init__(
        self, model: ModelFiles | None = None, progress: Progress | None = None, *, path: str | None = None
    ) -> None:
        assert (model is None) != (path is None), "a walked model or a path to walk"
        self.model = model
        self._path = path
        self._walked = threading.Event()
        self._walk_error: BaseException | None = None
        if model is not None:
            self._walked.set()
        self._relay = _ProgressRelay()
        if progress is not None:
            self._relay.attach(progress)
        self._cancelled = threading.Event()
        self._result: ModelFiles | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="hokusai-hash", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        if self.model is None:
            try:
                self.model = scan_model(self._path or "")
            except BaseException as exc:  # raised by walked(), in the caller's thread and order
                self._walk_error = exc
                return
            finally:
                self._walked.set()
        try:
            self._result = hash_model(self.model, self._relay, cancelled=self._cancelled)
        except HashCancelled:
            pass
        except BaseException as exc:  # re-raised by result(), in the caller's thread
            self._error = exc

    def walked(self) -> ModelFiles:
        """The model as walked (waiting for the walk); raises the walk's error, e.g. a missing path."""
        self._walked.wait()
        if self._walk_error is not None:
            raise self._walk_error
        assert self.model is not None
        return self.model

    def attach(self, progress: Progress) -> None:
        """Report to ``progress`` from now on, starting with what was hashed so far."""
        self._relay.attach(progress)

    def result(self) -> ModelFiles:
        self._thread.join()
        if self._error is not None:
            raise self._error
        if self._walk_error is not None:
            raise self._walk_error
        assert self._result is not None, "result() after cancel()"
        return self._result

    def cancel(self) -> None:
        """Stop at the next read and wait for the thread (a few milliseconds once it is hashing)."""
        self._cancelled.set()
        self._thread.join()


class _ProgressRelay:
    """Counts what a hash reports until a ``Progress`` is attached, then hands it all on."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._target: Progress | None = None
        self._nbytes = 0
        self._files = 0

    def attach(self, target: Progress) -> None:
        with self._lock:
            self._target = target
            nbytes, files, self._nbytes, self._files = self._nbytes, self._files, 0, 0
        if nbytes:
            target.advance(nbytes)
        for _ in range(files):
            target.file_done()

    def advance(self, nbytes: int) -> None:
        with self._lock:
            target = self._target
            if target is None:
                self._nbytes += nbytes
                return
        target.advance(nbytes)

    def file_done(self) -> None:
        with self._lock:
            target = self._target
            if target is None:
                self._files += 1
                return
        target.file_done()


def prefetch_digest(model_path: str | os.PathLike[str] | None) -> BackgroundHash | None:
    """Start walking and hashing ``model_path`` now, in a thread, before the slow imports of a registration.

    A re-run needs the digest before anything else, and the command's imports (SQLAlchemy, the
    database driver: ~0.3 s) then run beside the hash instead of before it. Nothing is checked here:
    the registration takes the walk (``walked()``) only where it needs the model, after the cheaper
    checks, so a bad token id is still reported first and at once.
    """
    if not model_path or usable_cores() < 2:
        # on one core the hash could only take turns with the imports it is meant to run beside: a
        # re-run would gain nothing, and a first registration (hashed while it uploads) would pay for it
        return None
    return BackgroundHash(path=os.fspath(model_path))


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, as a container or ``taskset`` limits it)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1
