"""How long an upload may wait on MLflow or the artifact store, from the size of what it sends.

What MLflow's timeouts bound (MLflow 3.17, read per request from the environment):

- ``MLFLOW_HTTP_REQUEST_TIMEOUT`` (``mlflow/utils/rest_utils.py``) goes to ``requests`` as one
  number, so it is both the connect timeout and the read timeout, and urllib3 applies it to each
  socket operation: sending a chunk of the body, or waiting for the next bytes of the answer. It is a
  bound on silence, not on the whole transfer: a 20 GB body that keeps moving is never cut by it.
- The silence that does grow with the size comes after the last byte: an MLflow server that proxies
  artifacts to a store it cannot stream into (``--artifacts-destination gs://...``: its
  ``GCSArtifactRepository`` is no ``StreamUploadMixin``) writes the body to a temporary file, uploads
  that file to the bucket, and only then answers (``mlflow/server/handlers.py``,
  ``_upload_artifact``). Behind a buffering proxy or load balancer it is the same. A fixed 60 s is
  enough for 200 MB and cuts a 20 GB file, which MLflow then retries from the first byte.
- ``MLFLOW_ARTIFACT_UPLOAD_DOWNLOAD_TIMEOUT`` is the ``timeout`` MLflow's GCS repository gives each
  ``blob.upload_from_filename`` (direct mode: the client writes to the bucket); the Google client
  applies it per HTTP request, and sends a file over 8 MiB as a resumable upload in 100 MiB requests
  (``google/cloud/storage/blob.py``, ``_DEFAULT_CHUNKSIZE``), so one request carries at most that.

So one rule for every request that carries file bytes: wait ``stall + bytes / min_rate`` seconds,
where ``stall`` is how long a healthy service may go quiet at all (default 60 s, today's bound) and
``min_rate`` the slowest rate at which a healthy service takes in and passes on bytes (default
10 MiB/s, well under what a server in the bucket's region reaches). A 200 MB file waits at most 80 s,
a 20 GB file 34 min; a service that goes silent on a small file is given up after about a minute.
MLflow still retries a request that timed out (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``), and then the
registration stops with exit 4.

The budget is set only while files upload (``upload_timeouts``); metadata calls keep the ordinary
per-request bound. It is never shorter than ``HOKUSAI_MLFLOW_TIMEOUT`` (the floor the registry
passes), and a value the user set for an MLflow variable is kept when it is longer.

Both variables are set once, before other threads start (``set_transfer_defaults``, from the
registry's constructor), and an upload only overwrites them and puts the values back: never adds or
removes a key. Threads that run beside the upload (the Pub/Sub sink's preparation and preflight:
google.auth, requests' proxy lookup) iterate ``os.environ``, and a key removed meanwhile is a
``KeyError`` in them (the race of MLflow's telemetry, ``vendors.route_vendor_output``).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass

from hokusai_action.settings.table import DEFAULT_UPLOAD_MIN_RATE_MIB_S, DEFAULT_UPLOAD_STALL_SECONDS

MIB = 1024 * 1024
# google-cloud-storage sends a file over 8 MiB in resumable requests of this many bytes
GCS_REQUEST_BYTES = 100 * MIB

HTTP_REQUEST_TIMEOUT = "MLFLOW_HTTP_REQUEST_TIMEOUT"
ARTIFACT_UPLOAD_TIMEOUT = "MLFLOW_ARTIFACT_UPLOAD_DOWNLOAD_TIMEOUT"

# the values this package put into the environment as defaults, so a user's own setting is told apart
_defaults_set: dict[str, str] = {}


@dataclass(frozen=True)
class TransferLimits:
    """``stall_seconds``: how long a healthy service may go silent; ``min_rate_mib_s``: the slowest
    rate, in MiB/s, at which a healthy service takes in and passes on an upload."""

    stall_seconds: float = DEFAULT_UPLOAD_STALL_SECONDS
    min_rate_mib_s: float = DEFAULT_UPLOAD_MIN_RATE_MIB_S

    def __post_init__(self) -> None:
        if not (self.stall_seconds > 0 and self.min_rate_mib_s > 0):
            raise ValueError("stall_seconds and min_rate_mib_s must be positive")

    def wait_for(self, request_bytes: int) -> int:
        """Seconds to wait on one request carrying ``request_bytes``, in whole seconds (MLflow reads
        its timeouts as integers), rounded up."""
        return math.ceil(self.stall_seconds + max(0, request_bytes) / (self.min_rate_mib_s * MIB))

    def upload_environment(self, largest_file: int) -> dict[str, str]:
        """MLflow's timeout variables for uploading files of at most ``largest_file`` bytes."""
        return {
            HTTP_REQUEST_TIMEOUT: str(self.wait_for(largest_file)),
            ARTIFACT_UPLOAD_TIMEOUT: str(self.wait_for(min(largest_file, GCS_REQUEST_BYTES))),
        }


def set_default(name: str, value: str, environ: MutableMapping[str, str] | None = None) -> None:
    """``environ.setdefault(name, value)``, remembering that the value is ours and not the user's."""
    environ = os.environ if environ is None else environ
    if name not in environ or environ[name] == _defaults_set.get(name):
        environ[name] = value
        _defaults_set[name] = value


def set_transfer_defaults(
    limits: TransferLimits, floor_seconds: float = 0, environ: MutableMapping[str, str] | None = None
) -> None:
    """The timeouts outside an upload, unless the user set them: metadata calls wait ``floor_seconds``
    (at least 60 s); an artifact transfer outside an upload (a download, a signature) gets one full
    GCS request's budget. Call it before other threads start: afterwards the keys always exist."""
    set_default(HTTP_REQUEST_TIMEOUT, str(int(max(floor_seconds, 60))), environ)
    budget = max(limits.wait_for(GCS_REQUEST_BYTES), math.ceil(floor_seconds))
    set_default(ARTIFACT_UPLOAD_TIMEOUT, str(budget), environ)


def _user_seconds(name: str, environ: MutableMapping[str, str]) -> int | None:
    """The user's own whole-second value of ``name``, or None (unset, ours, or not a number)."""
    value = environ.get(name)
    if value is None or value == _defaults_set.get(name):
        return None
    try:
        return int(value)
    except ValueError:
        return None


@contextlib.contextmanager
def upload_timeouts(
    limits: TransferLimits,
    largest_file: int,
    environ: MutableMapping[str, str] | None = None,
    *,
    floor_seconds: float = 0,
) -> Iterator[dict[str, str]]:
    """Give MLflow's per-request timeouts the budget of an upload of files up to ``largest_file``
    bytes, at least ``floor_seconds``, while the block runs; put the previous values back after. A
    longer value the user set is kept, and so is ``-1`` (MLflow's "no timeout" for the GCS one).
    Yields what is in force.

    Only values change: a key missing on entry (a caller that skipped ``set_transfer_defaults``) is
    given its default first, and every key is put back, never removed."""
    environ = os.environ if environ is None else environ
    if HTTP_REQUEST_TIMEOUT not in environ or ARTIFACT_UPLOAD_TIMEOUT not in environ:
        set_transfer_defaults(limits, floor_seconds, environ)
    previous = {name: environ[name] for name in (HTTP_REQUEST_TIMEOUT, ARTIFACT_UPLOAD_TIMEOUT)}
    in_force: dict[str, str] = {}
    for name, derived in limits.upload_environment(largest_file).items():
        budget = max(int(derived), math.ceil(floor_seconds))
        own = _user_seconds(name, environ)
        unbounded = own == -1 and name == ARTIFACT_UPLOAD_TIMEOUT
        in_force[name] = str(own) if own is not None and (unbounded or own > budget) else str(budget)
    try:
        environ.update(in_force)
        yield in_force
    finally:
        environ.update(previous)
