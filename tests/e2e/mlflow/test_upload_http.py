"""The upload's own HTTP client (``hokusai_action/mlflow/http_put.py``) keeps what MLflow's client gives an
upload: each file stored under its own name, MLflow's retries of a transient answer (``Retry-After``
included), HTTPS with the user's CA bundle or without verification, and the client certificate.
Against the real MLflow server; through a loopback proxy (tests/upload_proxy.py) where a fault or TLS
is needed."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from tests.helpers import assert_one_clear_line, register_args
from tests.tls_files import make_tls_files
from tests.upload_proxy import ARTIFACT_PUT

pytestmark = [pytest.mark.e2e]

MAX_RETRIES = 3  # the registry's bound on MLflow's retries (MLFLOW_HTTP_REQUEST_MAX_RETRIES)
NO_BACKOFF = {"MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0", "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0"}


def tree(root: Path) -> dict[str, bytes]:
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in root.rglob("*") if path.is_file()}


def stored_tree(mlflow_client, token: str, version: str, folder: Path) -> dict[str, bytes]:
    import mlflow

    source = mlflow_client.get_model_version(f"hokusai-{token}", version).source
    return tree(Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(folder))))


def test_each_file_is_stored_under_its_own_name(run_cli, make_token, make_model, mlflow_client, tmp_path):
    files = {
        "a b;c=1&d+e,f(g)!.bin": os.urandom(1024),
        "ünïcödé/naïve.bin": os.urandom(1024),
        "plain.bin": os.urandom(1024),
    }
    token, model = make_token(), make_model(files=files, metrics=False)

    result = run_cli(*register_args(token, model, "--metric-value", "0.91", "--output", "json"))

    assert result.code == 0, result.stderr
    assert stored_tree(mlflow_client, token, result.json["model_version"], tmp_path / "dl") == files


# A round trip through both stores a user may have: the proxied `mlflow server` of the tests and the
# embedded SQLite store. Every class of character a name may hold is either given back byte for byte,
# or refused before anything is claimed or uploaded (exit 2, naming the file): what came back otherwise
# (a tab dropped, a control character percent-encoded, a leading space stripped, a newline failing the
# upload as an outage) is what hokusai_action/digest/walk.py refuses.
STORED_AS_THEY_ARE = {
    "a  b;c=1&d+e,f(g)!.bin": "spaces and punctuation",
    "trail.bin ": "a trailing space",
    "d /f.bin": "a folder with a trailing space",
    "q'd\"b\\s[x]{y}<z>|*:~@^$`.bin": "quotes, backslash and shell characters",
    ".hidden": "a leading dot",
    "trail.": "a trailing dot",
    "ünïcödé/naïve.bin": "unicode (NFC)",
    "e\u0301-nfd.bin": "unicode (NFD)",
    "\U0001f600.bin": "outside the BMP",
    "\u00a0nbsp-first.bin": "a leading no-break space",
    "\u3000ideographic-first.bin": "a leading ideographic space",
    "z\u200bw\u202e.bin": "zero-width and bidi format characters",
    "l\u2028s.bin": "a line separator",
}
REFUSED_UP_FRONT = {
    "new\nline.bin": "holds the control character U+000A",
    "t\tab.bin": "holds the control character U+0009",
    "c\rr.bin": "holds the control character U+000D",
    "c\x01trl.bin": "holds the control character U+0001",
    "del\x7f.bin": "holds the control character U+007F",
    "nel\x85.bin": "holds the control character U+0085",
    " lead.bin": "has a file or folder name that starts with a space",
    "d/ lead.bin": "has a file or folder name that starts with a space",
}
STORES = {
    "server": {},  # cli_env's MLFLOW_TRACKING_URI: the session's server, proxying artifacts
    "embedded": {"MLFLOW_TRACKING_URI": ""},  # the default: a SQLite store under HOKUSAI_HOME
}


@pytest.mark.parametrize("store", sorted(STORES))
def test_a_name_is_given_back_byte_for_byte_or_refused_up_front(
    store, run_cli, make_token, make_model, snapshot, cli_env, tmp_path
):
    import mlflow

    env = STORES[store]
    files = {name: os.urandom(256) for name in STORED_AS_THEY_ARE}
    token, model = make_token(), make_model(files=files, metrics=False)
    result = run_cli(*register_args(token, model, "--metric-value", "0.91", "--output", "json"), env=env)
    assert result.code == 0, result.stderr
    tracking_uri = cli_env["MLFLOW_TRACKING_URI"] if store == "server" else f"sqlite:///{tmp_path}/.hokusai/mlflow.db"
    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    # the version's own location (file:// or mlflow-artifacts:/), not models:/ (DESIGN.md's pitfall)
    location = client.get_model_version_download_uri(f"hokusai-{token}", result.json["model_version"])
    folder = tmp_path / f"download-{store}"
    folder.mkdir()
    downloaded = mlflow.artifacts.download_artifacts(
        artifact_uri=location, dst_path=str(folder), tracking_uri=tracking_uri
    )
    assert tree(Path(downloaded)) == files

    for name, why in REFUSED_UP_FRONT.items():
        token = make_token()
        before = snapshot(token)
        model = make_model(files={"weights.bin": os.urandom(256), name: os.urandom(256)}, metrics=False)
        result = run_cli(*register_args(token, model, "--metric-value", "0.91"), env=env)
        shown = "".join(char if char.isprintable() else repr(char)[1:-1] for char in name)
        assert_one_clear_line(result, 2, f"Model file {model}/{shown} has a name MLflow cannot store", why)
        assert snapshot(token) == before, name


def test_a_transient_answer_is_retried_and_the_file_stored(run_cli, make_token, make_model, proxy_for, mlflow_client):
    proxy = proxy_for("flaky", failures=2, status=503)
    files = {"weights.bin": os.urandom(200 * 1024)}
    token, model = make_token(), make_model(files=files, metrics=False)

    result = run_cli(
        *register_args(token, model, "--metric-value", "0.91", "--output", "json"),
        env={"MLFLOW_TRACKING_URI": proxy.url, **NO_BACKOFF},
    )

    assert result.code == 0, result.stderr
    assert [(path.rsplit("/", 1)[-1], size) for path, size, _ in proxy.uploads] == [("weights.bin", 200 * 1024)] * 3
    assert [seconds is None for _, _, seconds in proxy.uploads] == [True, True, False]  # answered 503 twice
    assert len(mlflow_client.search_model_versions(f"name = 'hokusai-{token}'")) == 1


def test_retry_after_is_waited_out_before_the_retry(run_cli, make_token, make_model, proxy_for):
    proxy = proxy_for("flaky", failures=1, status=429, retry_after="2")
    token, model = make_token(), make_model(files={"weights.bin": os.urandom(1024)}, metrics=False)

    result = run_cli(
        *register_args(token, model, "--metric-value", "0.91"), env={"MLFLOW_TRACKING_URI": proxy.url, **NO_BACKOFF}
    )

    assert result.code == 0, result.stderr
    first, second = proxy.upload_times
    assert second - first >= 2


def test_retry_after_is_not_waited_when_mlflow_is_told_not_to(run_cli, make_token, make_model, proxy_for):
    proxy = proxy_for("flaky", failures=1, status=429, retry_after="60")
    token, model = make_token(), make_model(files={"weights.bin": os.urandom(1024)}, metrics=False)
    env = {"MLFLOW_TRACKING_URI": proxy.url, "MLFLOW_HTTP_RESPECT_RETRY_AFTER_HEADER": "false", **NO_BACKOFF}

    result = run_cli(*register_args(token, model, "--metric-value", "0.91"), env=env)

    assert result.code == 0, result.stderr
    first, second = proxy.upload_times
    assert second - first < 30  # retried at once (no backoff here), not after the 60 s asked for


def test_a_malformed_retry_after_is_retried_with_the_plain_backoff(run_cli, make_token, make_model, proxy_for):
    """``Retry-After: soon`` is no instruction: the retry waits MLflow's backoff, as with no header (it was
    an internal error, exit 70, with the lean client; MLflow's own client calls it an outage, exit 4)."""
    proxy = proxy_for("flaky", failures=1, status=503, retry_after="soon")
    token, model = make_token(), make_model(files={"weights.bin": os.urandom(1024)}, metrics=False)

    result = run_cli(
        *register_args(token, model, "--metric-value", "0.91"), env={"MLFLOW_TRACKING_URI": proxy.url, **NO_BACKOFF}
    )

    assert result.code == 0, result.stderr
    assert len(proxy.uploads) == 2


def test_a_failed_file_stops_the_upload_at_once_even_while_another_waits_out_a_retry_after(make_model, proxy_for):
    """One file refused for good (400) stops the upload; another file's retry waiting out a long
    ``Retry-After`` stops at once too, not after the wait (before: 20 s; urllib3 would honour 6 h)."""
    import time

    from mlflow.store.artifact.http_artifact_repo import HttpArtifactRepository

    from hokusai_action.digest.walk import scan_model
    from hokusai_action.mlflow.upload import upload_model

    proxy = proxy_for("flaky", failures=1_000, status=503, retry_after="600", refuse="a.bin")
    model = make_model(files={"a.bin": os.urandom(100), "b.bin": os.urandom(100)}, metrics=False)
    repository = HttpArtifactRepository(f"{proxy.url}/api/2.0/mlflow-artifacts/artifacts/0/some-run/artifacts")

    started = time.monotonic()
    with pytest.raises(Exception, match="400"):
        upload_model(repository, scan_model(model))
    assert time.monotonic() - started < 10


def test_a_server_that_stays_unavailable_stops_the_upload_after_mlflows_retries(
    run_cli, make_token, make_model, proxy_for, snapshot
):
    proxy = proxy_for("flaky", failures=1_000, status=503)
    token, model = make_token(), make_model(files={"weights.bin": os.urandom(1024)}, metrics=False)

    result = run_cli(
        *register_args(token, model, "--metric-value", "0.91"), env={"MLFLOW_TRACKING_URI": proxy.url, **NO_BACKOFF}
    )

    assert_one_clear_line(result, 4, "uploading the model", "503")
    assert len(proxy.uploads) == MAX_RETRIES + 1  # the first attempt and MLflow's retries, no more
    after = snapshot(token)
    assert after.versions == ()
    assert after.token["model_status"] == "draft"


def test_user_info_in_the_tracking_uri_is_sent_as_basic_auth_with_each_upload(
    run_cli, make_token, make_model, proxy_for
):
    """As requests does for MLflow (the URL's user-info wins over MLFLOW_TRACKING_TOKEN), so a server
    behind basic auth that takes MLflow's other calls takes the uploads too."""
    proxy = proxy_for("forward")
    token, model = make_token(), make_model(files={"weights.bin": os.urandom(1024)}, metrics=False)
    uri = proxy.url.replace("http://", "http://uploader:p%40ss%3Aword@")

    result = run_cli(*register_args(token, model, "--metric-value", "0.91"), env={"MLFLOW_TRACKING_URI": uri})

    assert result.code == 0, result.stderr
    expected = "Basic " + base64.b64encode(b"uploader:p@ss:word").decode()
    assert proxy.upload_authorizations == [expected]


@pytest.mark.parametrize("trust", ["ca-bundle-and-client-certificate", "insecure"])
def test_an_upload_over_https(trust, run_cli, make_token, make_model, proxy_for, mlflow_client, tmp_path):
    tls = make_tls_files(tmp_path / "tls")
    if trust == "insecure":
        proxy = proxy_for("forward", tls=tls.server_context())
        env = {"MLFLOW_TRACKING_INSECURE_TLS": "true"}
    else:
        proxy = proxy_for("forward", tls=tls.server_context(require_client_cert=True))
        env = {"MLFLOW_TRACKING_SERVER_CERT_PATH": str(tls.ca), "MLFLOW_TRACKING_CLIENT_CERT_PATH": str(tls.client)}
    files = {f"shard-{index}.bin": os.urandom(64 * 1024) for index in range(3)}
    token, model = make_token(), make_model(files=files, metrics=False)

    result = run_cli(
        *register_args(token, model, "--metric-value", "0.91", "--output", "json"),
        env={"MLFLOW_TRACKING_URI": proxy.url, **env},
    )

    assert result.code == 0, result.stderr
    assert proxy.url.startswith("https://")
    assert sorted(path.rsplit("/", 1)[-1] for path, _, _ in proxy.uploads if ARTIFACT_PUT in path) == sorted(files)
    assert stored_tree(mlflow_client, token, result.json["model_version"], tmp_path / "dl") == files


def test_an_upload_through_an_http_proxy(run_cli, make_token, make_model, proxy_for, services, mlflow_client, tmp_path):
    proxy = proxy_for("forward")
    files = {f"shard-{index}.bin": os.urandom(64 * 1024) for index in range(3)}
    token, model = make_token(), make_model(files=files, metrics=False)
    env = {"HTTP_PROXY": proxy.url, "http_proxy": proxy.url, "NO_PROXY": "", "no_proxy": ""}

    result = run_cli(*register_args(token, model, "--metric-value", "0.91", "--output", "json"), env=env)

    assert result.code == 0, result.stderr
    assert services.mlflow_url != proxy.url
    assert sorted(path.rsplit("/", 1)[-1] for path, _, _ in proxy.uploads) == sorted(files)  # through the proxy
    assert stored_tree(mlflow_client, token, result.json["model_version"], tmp_path / "dl") == files


@pytest.mark.slow
def test_a_connection_the_server_closed_while_idle_is_opened_again_not_failed(
    run_cli, make_token, make_model, mlflow_client, tmp_path
):
    """uvicorn closes a kept-alive connection after 5 s idle. Each upload thread pauses 6 s after each
    file here (a failpoint), so the threads that send a second file find theirs closed: they must open
    a new one, without MLflow's retries (none are allowed) and without an error."""
    files = {f"shard-{index:02d}.bin": os.urandom(4096) for index in range(10)}  # more files than threads
    token, model = make_token(), make_model(files=files, metrics=False)

    result = run_cli(
        *register_args(token, model, "--metric-value", "0.91", "--output", "json"),
        env={"HOKUSAI_FAILPOINT": "mid_upload:sleep:6", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"},
    )

    assert result.code == 0, result.stderr
    assert stored_tree(mlflow_client, token, result.json["model_version"], tmp_path / "dl") == files
