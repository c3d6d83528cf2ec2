"""The upload half of the MLflow adapter: a model's files sent to a logged model's artifact store,
hashed as they are read, so every byte is read once (DESIGN.md, "Model files").

MLflow's artifact repositories open each file by path. To read every byte once, and only from the
inode the walk listed, each file is opened here (``StreamedDigest.open``: no final link followed,
(device, inode) checked) and handed on as a stream that hashes what it gives out:

- the proxied HTTP store (``mlflow-artifacts:/``, ``http(s)://.../mlflow-artifacts/artifacts``): the
  same ``PUT <artifact uri>/<path>`` MLflow's ``HttpArtifactRepository.log_artifact`` sends, with the
  headers, credentials, TLS settings and retry policy of MLflow's ``http_request`` (``_HttpSender``),
  with our stream as the body;
- the local store (the embedded default, ``file://``): ``log_artifact_from_stream`` (an MLflow without
  it reads the file by path, as below: ``compat.py``);
- anything else (a client writing to ``gs://`` itself, S3, a proxied multipart upload of a big file):
  the repository reads the file by path, so the file is hashed first through the checked descriptor,
  then sent (two reads of that file); ``ensure_unchanged`` afterwards still catches a file rewritten
  between the hash and the send.

Several files are sent side by side (``UPLOAD_WORKERS`` threads, each taking the next file when it is
done with one): with many small files the time goes to per-request overhead on both sides (see the
README's "Where the time goes"), which threads overlap.
"""

from __future__ import annotations

import posixpath
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, cast

from hokusai_action.digest.files import ModelFiles, Progress
from hokusai_action.digest.streamed import STREAM_BLOCK, HashingReader, StreamedDigest
from hokusai_action.errors import ServiceUnavailable
from hokusai_action.failpoints import failpoint
from hokusai_action.redact import redact

# Files sent at once: enough to keep the server's workers busy while the client prepares the next
# request (measured on 2 cores, 2 server workers: see the README's "Where the time goes").
UPLOAD_WORKERS = 8

UPLOAD_REDIRECTED = (
    "MLflow's artifact store answered the upload of {path} with HTTP {status}, a redirect to {location}: "
    "the file was not stored, and nothing was registered."
)
UPLOAD_REDIRECTED_HINT = (
    "A proxy in front of MLflow redirects uploads (often to a login page): give this run credentials the proxy "
    "accepts, or set MLFLOW_TRACKING_URI to the address uploads should reach. Uploads never follow a redirect."
)
UPLOAD_NOT_STORED = "MLflow's artifact store answered the upload of {path} with HTTP {status}: the file was not stored."
UPLOAD_NOT_STORED_HINT = "Check what sits between this run and MLflow (a proxy or load balancer), then re-run."

# sends one file: ``send(reader, name, folder, path)``, ``path()`` giving the file's path when needed
Sender = Callable[[HashingReader, str, str | None, Callable[[], Path]], None]


def upload_model(
    repository: Any,
    model: ModelFiles,
    *,
    progress: Progress | None = None,
    workers: int = UPLOAD_WORKERS,
) -> ModelFiles:
    """Send every file of ``model`` to ``repository``; return ``model`` hashed by the upload.

    Each file is checked unchanged (since the walk listed it, or since ``hash_model`` read it) right
    before it is opened; a file not what was listed raises ``ModelChanged`` before a byte of it is
    read. For a model hashed already the caller compares the digests.
    """
    streamed = StreamedDigest(model, progress)
    sender = _sender_for(repository, workers)
    try:
        _side_by_side(lambda index: _send_file(model, index, streamed, sender), len(model.files), workers, streamed)
    finally:
        getattr(sender, "close", lambda: None)()
    return streamed.finish()


def _send_file(model: ModelFiles, index: int, streamed: StreamedDigest, sender: Sender) -> None:
    """Send file ``index`` of ``model``, hashed as it is read."""
    model.ensure_file_unchanged(index)  # as listed by the walk, or as read by the hash before
    relative = model.files[index]
    folder, _, name = relative.rpartition("/")
    if not model.is_dir:
        name = model.root.name
    with streamed.open(index) as reader:
        try:
            sender(reader, name, folder or None, lambda: model.path_of(relative))
        except Exception as exc:
            if reader.failure is not None:  # the file changed: clients wrap what a body raises
                raise reader.failure from exc
            raise
        streamed.done(index, reader)
    failpoint("mid_upload")


def _side_by_side(send: Callable[[int], None], count: int, workers: int, streamed: StreamedDigest) -> None:
    """``send(index)`` for every index below ``count``, in up to ``workers`` threads, each taking the next
    index when it is done with one (no future per file: with 10,000 small files a thread pool's futures
    cost the client as much CPU as parsing the server's answers). The first failure stops the others
    and is raised."""
    pending = iter(range(count))
    taking = threading.Lock()
    failures: list[BaseException] = []

    def work() -> None:
        try:
            while not streamed.stopped:
                with taking:
                    index = next(pending, None)
                if index is None:
                    return
                send(index)
        except BaseException as exc:
            with taking:
                failures.append(exc)
            streamed.stop()  # the first failure stops the others: files being sent stop at their next block

    threads = [
        threading.Thread(target=work, name=f"hokusai-upload-{number}", daemon=True)
        for number in range(max(1, min(workers, count)))
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    except BaseException:
        # a SIGTERM (``SystemExit`` in this thread) or Ctrl-C: files not started yet are dropped (with MLflow
        # gone each would wait out its own retries); files being sent stop at their next block
        # (``StreamedDigest.stop``), so the claim is given back in about a second, not after the biggest file
        streamed.stop()
        for thread in threads:
            if thread.ident is not None:
                thread.join()
        raise
    if failures:
        raise failures[0]  # the cause: the others stopped because of it (``UploadStopped``)


def _sender_for(repository: Any, workers: int) -> Sender:
    """How to send one file to ``repository``: ``send(reader, name, folder, path)``."""
    from mlflow.store.artifact.http_artifact_repo import HttpArtifactRepository
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

    from hokusai_action.mlflow.compat import streams_to_local

    if isinstance(repository, HttpArtifactRepository):
        return _HttpSender(repository, workers)
    if isinstance(repository, LocalArtifactRepository) and streams_to_local(repository):

        def send_local(reader: HashingReader, name: str, folder: str | None, path: Callable[[], Path]) -> None:
            # MLflow only reads the stream (``shutil.copyfileobj``): a reader is all of BinaryIO it uses
            repository.log_artifact_from_stream(cast("BinaryIO", reader), name, folder)

        return send_local

    def send_by_path(reader: HashingReader, name: str, folder: str | None, path: Callable[[], Path]) -> None:
        reader.finish()  # hashed first, through the checked descriptor; the repository reads it again
        repository.log_artifact(str(path()), folder)

    return send_by_path


class _HttpSender:
    """``PUT`` one file to MLflow's artifact proxy, as ``HttpArtifactRepository.log_artifact`` does.

    Same URL, headers and credentials as MLflow's ``http_request``, but worked out once per upload
    instead of once per file: profiled on 1,000 files of 10 KiB, ``http_request`` spent ~2 ms of each
    request failing to import Databricks/Spark modules (its request-header providers) and ~1 ms
    scanning the environment for proxies, as much as the server spent storing the file. The file then
    goes through ``http_put.PutClient`` (one kept-alive ``http.client``-level connection per upload
    thread, ~0.25 ms of client CPU per small file against ~1 ms through ``requests``), or, when an
    HTTP proxy applies to the URL, through one ``requests`` session whose pool is sized to the upload
    threads. Either way MLflow's retry policy (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``/``..._BACKOFF_*``,
    ``MLFLOW_HTTP_RESPECT_RETRY_AFTER_HEADER``, PUT retried on 408/429/5xx and on failed connections)
    applies, and a retried body starts over (``HashingReader.seek(0)``). Credentials MLflow resolves
    per request (Databricks SDK, AWS SigV4, auth plugins) go through ``http_request`` itself.

    A redirect is never followed, whatever ``MLFLOW_ALLOW_HTTP_REDIRECTS`` says (MLflow's default is
    to follow): ``requests`` re-sends a ``PUT`` answered 301/302/303 as a bodyless request (a ``GET``
    for 302/303, ``requests.sessions.rebuild_method`` and ``resolve_redirects``), so the file is
    stored nowhere while the page redirected to answers 200; a 307/308 re-sends the body, but to an
    address MLflow did not give, without ``Authorization`` once the host differs. Only a 2xx means
    the store has the file; anything else stops the upload (exit 4), naming the status.
    """

    def __init__(self, repository: Any, workers: int) -> None:
        from mlflow.environment_variables import MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE

        self._repository = repository
        self._multipart_from = MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE.get()
        creds = repository._host_creds
        self._per_request = any(
            getattr(creds, name, None) for name in ("use_databricks_sdk", "aws_sigv4", "auth", "client_secret")
        )
        self._direct: Any = None  # the lean client (http_put.py), when no HTTP proxy is in the way
        if not self._per_request:
            self._base = creds.host.rstrip("/")
            self._headers = _headers_for(creds, self._base)
            self._session, self._settings = _session_for(creds, self._base, workers)
            self._direct = _direct_client(self._base, self._headers, self._settings)

    def _multipart(self, path: Callable[[], Path], size: int) -> bool:
        """Whether MLflow would send this file in parts (``MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD``)."""
        from hokusai_action.mlflow.compat import would_send_in_parts

        if size < self._multipart_from:
            return False
        return would_send_in_parts(self._repository, str(path()))

    def __call__(self, reader: HashingReader, name: str, folder: str | None, path: Callable[[], Path]) -> None:
        from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_TIMEOUT
        from mlflow.utils.mime_type_utils import _guess_mime_type
        from mlflow.utils.rest_utils import augmented_raise_for_status, http_request

        from hokusai_action.mlflow.http_put import AnswerError

        if self._multipart(path, len(reader)):  # MLflow's parts read the file by path
            reader.finish()
            self._repository.log_artifact(str(path()), folder)
            return
        endpoint = posixpath.join("/", *((folder, name) if folder else (name,)))
        content_type = _guess_mime_type(name)
        timeout = MLFLOW_HTTP_REQUEST_TIMEOUT.get()  # read per file: it may follow the model's size
        shown = posixpath.join(folder or "", name)
        if self._direct is not None:
            answer = self._direct.put(endpoint, reader, content_type, timeout)
            if answer.status >= 400:
                raise AnswerError(self._direct.url_for(endpoint), answer)
            _ensure_stored(answer.status, answer.location, shown)
            return
        if self._per_request:
            response = http_request(
                self._repository._host_creds,
                endpoint,
                "PUT",
                data=reader,
                extra_headers={"Content-Type": content_type},
                allow_redirects=False,
            )
        else:
            response = self._session.put(
                self._base + endpoint,
                data=reader,
                headers={**self._headers, "Content-Type": content_type},
                timeout=timeout,
                allow_redirects=False,
                **self._settings,
            )
        augmented_raise_for_status(response)  # 4xx/5xx: MLflow's error, with the server's message
        _ensure_stored(response.status_code, response.headers.get("Location"), shown)

    def close(self) -> None:
        if self._direct is not None:
            self._direct.close()


REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})  # requests' REDIRECT_STATI


def _ensure_stored(status: int, location: str | None, path: str) -> None:
    """Raise ``ServiceUnavailable`` unless ``status`` is a 2xx: a redirect or any other answer stored nothing."""
    if 200 <= status < 300:
        return
    if status in REDIRECT_STATUSES and location:
        raise ServiceUnavailable(
            UPLOAD_REDIRECTED.format(path=path, status=status, location=redact(location)), hint=UPLOAD_REDIRECTED_HINT
        )
    raise ServiceUnavailable(UPLOAD_NOT_STORED.format(path=path, status=status), hint=UPLOAD_NOT_STORED_HINT)


def _headers_for(creds: Any, url: str) -> dict[str, str]:
    """What MLflow's ``http_request`` sends with every request: its header providers, auth, workspace."""
    import base64

    from mlflow.tracking.request_header.registry import resolve_request_headers

    from hokusai_action.mlflow.compat import workspace_header

    headers = dict(resolve_request_headers())
    workspace = workspace_header("/mlflow-artifacts/artifacts")
    if workspace is not None:
        headers.setdefault(*workspace)
    if creds.username and creds.password:
        pair = f"{creds.username}:{creds.password}".encode()
        headers["Authorization"] = "Basic " + base64.standard_b64encode(pair).decode()
    elif creds.token:
        headers["Authorization"] = f"Bearer {creds.token}"
    return headers


def _direct_client(url: str, headers: dict[str, str], settings: dict[str, Any]) -> Any:
    """The lean client (``http_put.py``) for ``url``, or None when an HTTP proxy applies to it: then
    ``requests`` keeps its proxy handling (CONNECT tunnels, TLS to the proxy, proxy credentials)."""
    from requests.utils import DEFAULT_CA_BUNDLE_PATH, select_proxy

    from hokusai_action.mlflow.compat import socket_options
    from hokusai_action.mlflow.http_put import PutClient, make_target

    if select_proxy(url, settings.get("proxies") or {}):
        return None
    target = make_target(
        url,
        headers,
        verify=settings.get("verify", True),
        default_ca_bundle=DEFAULT_CA_BUNDLE_PATH,
        client_cert=settings.get("cert"),
        socket_options=socket_options(),
    )
    return PutClient(target, _mlflow_retry())


def _mlflow_retry() -> Any:
    """The ``urllib3`` ``Retry`` MLflow's ``http_request`` uses (``_cached_get_request_session``), from
    the same environment variables, with redirects left to the caller."""
    from mlflow.environment_variables import (
        MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR,
        MLFLOW_HTTP_REQUEST_BACKOFF_JITTER,
        MLFLOW_HTTP_REQUEST_MAX_RETRIES,
        MLFLOW_HTTP_RESPECT_RETRY_AFTER_HEADER,
    )
    from mlflow.utils.request_utils import _TRANSIENT_FAILURE_RESPONSE_CODES
    from urllib3.util.retry import Retry

    retries = MLFLOW_HTTP_REQUEST_MAX_RETRIES.get()
    return Retry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        status_forcelist=_TRANSIENT_FAILURE_RESPONSE_CODES,
        backoff_factor=MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.get(),
        backoff_jitter=MLFLOW_HTTP_REQUEST_BACKOFF_JITTER.get(),
        allowed_methods=None,  # a PUT of the same bytes to the same path is idempotent
        raise_on_status=False,
        respect_retry_after_header=MLFLOW_HTTP_RESPECT_RETRY_AFTER_HEADER.get(),
    )


def _session_for(creds: Any, url: str, workers: int) -> tuple[Any, dict[str, Any]]:
    """A session whose pool holds one kept-alive connection per upload thread, with MLflow's retries.

    The environment (proxies, ``REQUESTS_CA_BUNDLE``) is read once here, not on every request.
    """
    import requests

    from hokusai_action.mlflow.compat import http_adapter_class

    retry = _mlflow_retry()
    session = requests.Session()
    settings = session.merge_environment_settings(url, {}, None, creds.verify, creds.client_cert_path)
    settings.pop("stream", None)
    session.trust_env = False  # read once above

    base = http_adapter_class()  # MLflow's own adapter, chosen by the MLflow installed

    def init_poolmanager(adapter: Any, *args: Any, **pool_kwargs: Any) -> None:
        # urllib3 reads a body in 16 KiB pieces by default: 131,072 reads (each a Python call into
        # the hashing reader) for 2 GiB; one read per block it has hashed costs 2,048
        pool_kwargs.setdefault("blocksize", STREAM_BLOCK)
        base.init_poolmanager(adapter, *args, **pool_kwargs)

    block_adapter = type("BlockSizedAdapter", (base,), {"init_poolmanager": init_poolmanager})
    adapter = block_adapter(pool_connections=1, pool_maxsize=max(1, workers), max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session, settings
