"""The upload half of the MLflow adapter: a model's files sent to a logged model's artifact store,
hashed as they are read (DESIGN.md, "Model files"; issue 9, "Bytes read once").

MLflow's artifact repositories open each file by path. To read every byte once, and only from the
inode the walk listed, each file is opened here (``StreamedDigest.open``: no final link followed,
(device, inode) checked) and handed on as a stream that hashes what it gives out:

- the proxied HTTP store (``mlflow-artifacts:/``, ``http(s)://.../mlflow-artifacts/artifacts``): the
  same ``PUT <artifact uri>/<path>`` MLflow's ``HttpArtifactRepository.log_artifact`` sends, through
  MLflow's own ``http_request`` (its auth, TLS settings, retries and pooled session), with our stream
  as the body;
- the local store (the embedded default, ``file://``): ``log_artifact_from_stream``;
- anything else (a client writing to ``gs://`` itself, S3, a proxied multipart upload of a big file):
  the repository reads the file by path, so the file is hashed first through the checked descriptor,
  then sent (two reads of that file); ``ensure_unchanged`` afterwards still catches a file rewritten
  between the hash and the send.

Several files are sent side by side (``UPLOAD_WORKERS``): with many small files the time goes to
per-request overhead on both sides (see the README's "Where the time goes"), which threads overlap.
"""

from __future__ import annotations

import os
import posixpath
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from hokusai_action.digest import HashingReader, ModelFiles, Progress, StreamedDigest
from hokusai_action.failpoints import failpoint

# Files sent at once. 8 keeps both server workers and the client busy on 2 cores (measured with
# benchmarks/run.py --shape 10k-small: 4 -> 8 workers cut the wall time, 16 gained nothing more);
# MLflow's pooled session keeps up to MLFLOW_HTTP_POOL_MAXSIZE connections alive, set to match.
UPLOAD_WORKERS = 8


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
    os.environ.setdefault("MLFLOW_HTTP_POOL_MAXSIZE", str(max(workers, 10)))
    streamed = StreamedDigest(model, progress)
    sender = _sender_for(repository)

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
        # files not started yet are dropped: with MLflow gone each would wait out its own retries
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return streamed.finish()


def _sender_for(repository: Any):
    """How to send one file to ``repository``: ``send(reader, name, folder, path)``."""
    from mlflow.store.artifact.http_artifact_repo import HttpArtifactRepository
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

    if isinstance(repository, HttpArtifactRepository):
        return _HttpSender(repository)
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

    MLflow's ``http_request`` keeps one pooled ``requests`` session per retry policy, so connections
    are reused across files and threads. A retried ``PUT`` rewinds the body (``HashingReader.seek(0)``),
    and the hash starts over with it.
    """

    def __init__(self, repository: Any) -> None:
        from mlflow.environment_variables import MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE

        self._repository = repository
        self._multipart_from = MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE.get()

    def _multipart(self, path: object, size: int) -> bool:
        """Whether MLflow would send this file in parts (``MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD``)."""
        if size < self._multipart_from:
            return False
        should = getattr(self._repository, "_should_multipart_upload", None)
        return bool(should and should(str(path)))

    def __call__(self, reader: HashingReader, name: str, folder: str | None, path: object) -> None:
        from mlflow.utils.mime_type_utils import _guess_mime_type
        from mlflow.utils.rest_utils import augmented_raise_for_status, http_request

        if self._multipart(path, len(reader)):  # MLflow's parts read the file by path
            reader.finish()
            self._repository.log_artifact(str(path), folder)
            return
        endpoint = posixpath.join("/", *((folder, name) if folder else (name,)))
        response = http_request(
            self._repository._host_creds,
            endpoint,
            "PUT",
            data=reader,
            extra_headers={"Content-Type": _guess_mime_type(name)},
        )
        augmented_raise_for_status(response)
