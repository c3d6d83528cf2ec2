"""The upload half of the MLflow adapter: a model's files sent to a logged model's artifact store,
hashed as they are read (DESIGN.md, "Model files"; issue 9, "Bytes read once").

MLflow's artifact repositories open each file by path. To read every byte once, and only from the
inode the walk listed, each file is opened here (``StreamedDigest.open``: no final link followed,
(device, inode) checked) and handed on as a stream that hashes what it gives out:

- the proxied HTTP store (``mlflow-artifacts:/``, ``http(s)://.../mlflow-artifacts/artifacts``): the
  same ``PUT <artifact uri>/<path>`` MLflow's ``HttpArtifactRepository.log_artifact`` sends, with the
  headers, credentials, TLS settings and retry policy of MLflow's ``http_request`` (``_HttpSender``),
  with our stream as the body;
- the local store (the embedded default, ``file://``): ``log_artifact_from_stream``;
- anything else (a client writing to ``gs://`` itself, S3, a proxied multipart upload of a big file):
  the repository reads the file by path, so the file is hashed first through the checked descriptor,
  then sent (two reads of that file); ``ensure_unchanged`` afterwards still catches a file rewritten
  between the hash and the send.

Several files are sent side by side (``UPLOAD_WORKERS``): with many small files the time goes to
per-request overhead on both sides (see the README's "Where the time goes"), which threads overlap.
"""

from __future__ import annotations

import posixpath
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from hokusai_action.digest import STREAM_BLOCK, HashingReader, ModelFiles, Progress, StreamedDigest
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

    def send(index: int) -> None:
        model.ensure_file_unchanged(index)  # as listed by the walk, or as read by the hash before
        relative = model.files[index]
        folder = posixpath.dirname(relative) or None
        name = posixpath.basename(relative) if model.is_dir else model.root.name
        with streamed.open(index) as reader:
            try:
                sender(reader, name, folder, model.path_of(relative))
            except Exception as exc:
                if reader.failure is not None:  # the file changed: clients wrap what a body raises
                    raise reader.failure from exc
                raise
            streamed.done(index, reader)
        failpoint("mid_upload")

    count = len(model.files)
    pool = ThreadPoolExecutor(max_workers=max(1, min(workers, count)), thread_name_prefix="hokusai-upload")
    try:
        list(pool.map(send, range(count)))  # re-raises the first failure
    except BaseException:
        # files not started yet are dropped: with MLflow gone each would wait out its own retries; files
        # being sent stop at their next block (``StreamedDigest.stop``), so a SIGTERM (``SystemExit``
        # in this thread) gives the claim back in about a second, not after the biggest file is sent
        streamed.stop()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return streamed.finish()


def _sender_for(repository: Any, workers: int):
    """How to send one file to ``repository``: ``send(reader, name, folder, path)``."""
    from mlflow.store.artifact.http_artifact_repo import HttpArtifactRepository
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

    if isinstance(repository, HttpArtifactRepository):
        return _HttpSender(repository, workers)
    if isinstance(repository, LocalArtifactRepository):

        def send_local(reader: HashingReader, name: str, folder: str | None, path: object) -> None:
            repository.log_artifact_from_stream(reader, name, folder)

        return send_local

    def send_by_path(reader: HashingReader, name: str, folder: str | None, path: object) -> None:
        reader.finish()  # hashed first, through the checked descriptor; the repository reads it again
        repository.log_artifact(str(path), folder)

    return send_by_path


class _HttpSender:
    """``PUT`` one file to MLflow's artifact proxy, as ``HttpArtifactRepository.log_artifact`` does.

    Same URL, headers and credentials as MLflow's ``http_request``, but worked out once per upload
    instead of once per file: profiled on 1,000 files of 10 KiB, ``http_request`` spent ~2 ms of each
    request failing to import Databricks/Spark modules (its request-header providers) and ~1 ms
    scanning the environment for proxies, as much as the server spent storing the file. Here one
    ``requests`` session, its pool sized to the upload threads, keeps the connections alive; MLflow's
    retry policy (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``/``..._BACKOFF_*``, PUT retried on 408/429/5xx)
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
        if not self._per_request:
            self._base = creds.host.rstrip("/")
            self._headers = _headers_for(creds, self._base)
            self._session, self._settings = _session_for(creds, self._base, workers)

    def _multipart(self, path: object, size: int) -> bool:
        """Whether MLflow would send this file in parts (``MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD``)."""
        if size < self._multipart_from:
            return False
        should = getattr(self._repository, "_should_multipart_upload", None)
        return bool(should and should(str(path)))

    def __call__(self, reader: HashingReader, name: str, folder: str | None, path: object) -> None:
        from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_TIMEOUT
        from mlflow.utils.mime_type_utils import _guess_mime_type
        from mlflow.utils.rest_utils import augmented_raise_for_status, http_request

        if self._multipart(path, len(reader)):  # MLflow's parts read the file by path
            reader.finish()
            self._repository.log_artifact(str(path), folder)
            return
        endpoint = posixpath.join("/", *((folder, name) if folder else (name,)))
        content_type = {"Content-Type": _guess_mime_type(name)}
        if self._per_request:
            response = http_request(
                self._repository._host_creds,
                endpoint,
                "PUT",
                data=reader,
                extra_headers=content_type,
                allow_redirects=False,
            )
        else:
            response = self._session.put(
                self._base + endpoint,
                data=reader,
                headers={**self._headers, **content_type},
                timeout=MLFLOW_HTTP_REQUEST_TIMEOUT.get(),  # read per file: it may follow the model's size
                allow_redirects=False,
                **self._settings,
            )
        augmented_raise_for_status(response)  # 4xx/5xx: MLflow's error, with the server's message
        _ensure_stored(response, posixpath.join(folder or "", name))


def _ensure_stored(response: Any, path: str) -> None:
    """Raise ``ServiceUnavailable`` unless ``response`` is a 2xx: a redirect or any other answer stored nothing."""
    status = response.status_code
    if 200 <= status < 300:
        return
    if response.is_redirect or response.is_permanent_redirect:
        location = redact(response.headers.get("Location") or "nowhere")
        raise ServiceUnavailable(
            UPLOAD_REDIRECTED.format(path=path, status=status, location=location), hint=UPLOAD_REDIRECTED_HINT
        )
    raise ServiceUnavailable(UPLOAD_NOT_STORED.format(path=path, status=status), hint=UPLOAD_NOT_STORED_HINT)


def _headers_for(creds: Any, url: str) -> dict[str, str]:
    """What MLflow's ``http_request`` sends with every request: its header providers, auth, workspace."""
    import base64

    from mlflow.tracking.request_header.registry import resolve_request_headers
    from mlflow.utils import rest_utils

    headers = dict(resolve_request_headers())
    workspace = rest_utils.get_request_workspace()
    if workspace and rest_utils._should_include_workspace_header("/mlflow-artifacts/artifacts"):
        headers.setdefault(rest_utils.WORKSPACE_HEADER_NAME, workspace)
    if creds.username and creds.password:
        pair = f"{creds.username}:{creds.password}".encode()
        headers["Authorization"] = "Basic " + base64.standard_b64encode(pair).decode()
    elif creds.token:
        headers["Authorization"] = f"Bearer {creds.token}"
    return headers


def _session_for(creds: Any, url: str, workers: int) -> tuple[Any, dict[str, Any]]:
    """A session whose pool holds one kept-alive connection per upload thread, with MLflow's retries.

    The environment (proxies, ``REQUESTS_CA_BUNDLE``) is read once here, not on every request.
    """
    import requests
    from mlflow.environment_variables import (
        MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR,
        MLFLOW_HTTP_REQUEST_BACKOFF_JITTER,
        MLFLOW_HTTP_REQUEST_MAX_RETRIES,
    )
    from mlflow.utils.request_utils import _TRANSIENT_FAILURE_RESPONSE_CODES, TCPKeepAliveHTTPAdapter
    from urllib3.util.retry import Retry

    retries = MLFLOW_HTTP_REQUEST_MAX_RETRIES.get()
    retry = Retry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        status_forcelist=_TRANSIENT_FAILURE_RESPONSE_CODES,
        backoff_factor=MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.get(),
        backoff_jitter=MLFLOW_HTTP_REQUEST_BACKOFF_JITTER.get(),
        allowed_methods=None,  # a PUT of the same bytes to the same path is idempotent
        raise_on_status=False,
        respect_retry_after_header=True,
    )
    session = requests.Session()
    settings = session.merge_environment_settings(url, {}, None, creds.verify, creds.client_cert_path)
    settings.pop("stream", None)
    session.trust_env = False  # read once above

    class Adapter(TCPKeepAliveHTTPAdapter):
        def init_poolmanager(self, *args: Any, **pool_kwargs: Any) -> None:
            # urllib3 reads a body in 16 KiB pieces by default: 131,072 reads (each a Python call into
            # the hashing reader) for 2 GiB; one read per block it has hashed costs 2,048
            pool_kwargs.setdefault("blocksize", STREAM_BLOCK)
            super().init_poolmanager(*args, **pool_kwargs)

    adapter = Adapter(pool_connections=1, pool_maxsize=max(1, workers), max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session, settings
