"""What an older MLflow 3.x client lacks, or does otherwise, of what the registry and upload use.

The upload (``upload.py``) sends files the way MLflow's own ``http_request`` would, and so reads a
few of MLflow's private helpers. The oldest supported ``mlflow-skinny`` (pyproject.toml; the README's
"Supported versions") has the logged-model API but not all of these helpers. Each function here
returns the helper where MLflow has it, else what that older MLflow did without it, so the request
an older client's user sends is the one their own MLflow would send.

- ``get_artifact_repository(uri, tracking_uri=...)``: MLflow 3.1.3; before, it resolves
  ``mlflow-artifacts:/`` against the global tracking URI, which the registry sets to the same.
- request workspaces (the ``X-MLFLOW-WORKSPACE`` header): MLflow 3.10; before, no such header.
- TCP keepalive on the client's sockets (``MLFLOW_HTTP_TCP_KEEPALIVE*``): MLflow 3.11; before,
  urllib3's default socket options and a plain ``requests`` adapter.
- ``HttpArtifactRepository._should_multipart_upload``: MLflow 3.15; before, the same test inline
  in ``log_artifact`` (``MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD`` and the minimum size).
- ``LocalArtifactRepository.log_artifact_from_stream``: MLflow 3.15; before, files go by path.
- a database store (the embedded ``sqlite:///``) at another schema revision: from MLflow 3.9 opening
  it leaves it alone when all its tables are there, and refuses it at another revision, which
  ``connection.py`` then names. Before 3.9 MLflow runs its schema upgrade each time it opens a store
  (a no-op at its head), so it migrates an older store in place and fails on a newer one inside the
  command: the registry asks for the store's revision first (``migrates_stores_on_open``).
- downloading an artifact folder that lists nothing: from MLflow 3.9 an empty folder; before, a
  bare INTERNAL_ERROR (it takes the folder for a missing file): ``downloads.py`` lists it to tell.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from requests.adapters import HTTPAdapter


def workspace_header(endpoint: str) -> tuple[str, str] | None:
    """The workspace header MLflow's ``http_request`` adds for ``endpoint``, or None."""
    from mlflow.utils import rest_utils

    current = getattr(rest_utils, "get_request_workspace", None)
    if current is None:  # an MLflow without workspaces sends none
        return None
    workspace = current()
    if workspace and rest_utils._should_include_workspace_header(endpoint):
        return rest_utils.WORKSPACE_HEADER_NAME, workspace
    return None


def socket_options() -> list[tuple[int, int, int]]:
    """The socket options MLflow's HTTP client connects with (TCP keepalive where it has it)."""
    from mlflow.utils import request_utils

    build = getattr(request_utils, "_build_socket_options", None)
    if build is not None:
        return build()
    from urllib3.connection import HTTPConnection

    return list(HTTPConnection.default_socket_options or [])


def http_adapter_class() -> type[HTTPAdapter]:
    """The ``requests`` adapter class MLflow's HTTP client mounts."""
    from mlflow.utils import request_utils

    adapter = getattr(request_utils, "TCPKeepAliveHTTPAdapter", None)
    if adapter is not None:
        return adapter
    from requests.adapters import HTTPAdapter

    return HTTPAdapter


def would_send_in_parts(repository: Any, path: str) -> bool:
    """Whether MLflow's ``HttpArtifactRepository.log_artifact`` would send the file at ``path`` in parts."""
    should = getattr(repository, "_should_multipart_upload", None)
    if should is not None:
        return bool(should(path))
    import os

    from mlflow.environment_variables import (
        MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD,
        MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE,
    )

    return bool(MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD.get()) and (
        os.path.getsize(path) >= MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE.get()
    )


def streams_to_local(repository: Any) -> bool:
    """Whether a local artifact repository takes a file as a stream (else it reads it by path)."""
    return callable(getattr(repository, "log_artifact_from_stream", None))


def migrates_stores_on_open() -> bool:
    """Whether this MLflow runs its schema upgrade whenever it opens a database store (before 3.9 its
    ``_all_tables_exist`` wanted exactly the tables it knew, so a store at its head never passed)."""
    import mlflow

    major, minor = (int(part) for part in mlflow.__version__.split(".")[:2])
    return (major, minor) < (3, 9)


def artifact_repository(artifact_uri: str, tracking_uri: str) -> Any:
    """MLflow's artifact repository for ``artifact_uri``, on the server ``tracking_uri`` names."""
    import inspect

    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    if "tracking_uri" in inspect.signature(get_artifact_repository).parameters:
        return get_artifact_repository(artifact_uri, tracking_uri=tracking_uri)
    return get_artifact_repository(artifact_uri)
