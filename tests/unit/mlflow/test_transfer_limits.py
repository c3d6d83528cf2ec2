"""The upload timeouts derived from the size of what a request carries (hokusai_action.mlflow.transfer_limits)."""

from __future__ import annotations

import os

import pytest

from hokusai_action.digest.hashing import inspect_model
from hokusai_action.errors import InputError
from hokusai_action.mlflow import transfer_limits
from hokusai_action.mlflow.transfer_limits import (
    ARTIFACT_UPLOAD_TIMEOUT,
    HTTP_REQUEST_TIMEOUT,
    MIB,
    TransferLimits,
    set_default,
    upload_timeouts,
)
from hokusai_action.settings.loader import load_settings

pytestmark = [pytest.mark.unit]

BASE_ENV = {"HOKUSAI_GIT_SHA": "0123456789abcdef0123456789abcdef01234567"}
GB = 10**9


@pytest.fixture(autouse=True)
def own_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """Which values are the package's defaults is module state: give each test its own."""
    monkeypatch.setattr(transfer_limits, "_defaults_set", {})


def test_the_wait_grows_with_the_bytes_a_request_carries():
    limits = TransferLimits()  # 60 s of silence, 10 MiB/s
    assert limits.wait_for(0) == 60
    assert limits.wait_for(2048) == 61  # whole seconds, rounded up: never below the stall bound
    assert limits.wait_for(200 * 10**6) == 80  # 200 MB: 60 + 19.1
    assert limits.wait_for(20 * GB) == 1968  # 20 GB: 60 + 1907.3 s, about 33 minutes
    sizes = [0, 1, MIB, 10 * MIB, GB, 20 * GB]
    assert [limits.wait_for(s) for s in sizes] == sorted(limits.wait_for(s) for s in sizes)


def test_the_settings_move_the_wait():
    assert TransferLimits(stall_seconds=2, min_rate_mib_s=0.5).wait_for(3 * MIB) == 8
    assert TransferLimits(stall_seconds=300, min_rate_mib_s=100).wait_for(20 * GB) == 300 + 191
    with pytest.raises(ValueError):
        TransferLimits(min_rate_mib_s=0)


def test_a_gcs_request_carries_at_most_one_resumable_chunk():
    env = TransferLimits().upload_environment(20 * GB)
    assert env == {HTTP_REQUEST_TIMEOUT: "1968", ARTIFACT_UPLOAD_TIMEOUT: "70"}  # 60 + 100 MiB / 10 MiB/s
    small = TransferLimits().upload_environment(2 * MIB)
    assert small == {HTTP_REQUEST_TIMEOUT: "61", ARTIFACT_UPLOAD_TIMEOUT: "61"}


def test_upload_timeouts_apply_while_uploading_and_put_back_what_was_there():
    environ = {"OTHER": "x"}
    set_default(HTTP_REQUEST_TIMEOUT, "60", environ)  # what the registry sets for metadata calls
    with upload_timeouts(TransferLimits(), 20 * GB, environ) as in_force:
        assert environ[HTTP_REQUEST_TIMEOUT] == in_force[HTTP_REQUEST_TIMEOUT] == "1968"
        assert environ[ARTIFACT_UPLOAD_TIMEOUT] == "70"
    outside = {"OTHER": "x", HTTP_REQUEST_TIMEOUT: "60", ARTIFACT_UPLOAD_TIMEOUT: "70"}  # the default: 60 + 10
    assert environ == outside

    with pytest.raises(OSError), upload_timeouts(TransferLimits(), GB, environ):
        raise OSError("the upload failed")
    assert environ == outside


class NoRemoval(dict):
    """An environment whose keys must never go: other threads iterate ``os.environ`` while files upload
    (google.auth, requests' proxy lookup), and a key removed meanwhile is a KeyError in them."""

    def __delitem__(self, key: str) -> None:
        raise AssertionError(f"{key} removed")

    def pop(self, key: str, *default: str) -> str:
        raise AssertionError(f"{key} removed")

    def popitem(self) -> tuple[str, str]:
        raise AssertionError("a key removed")

    def clear(self) -> None:
        raise AssertionError("every key removed")


@pytest.mark.parametrize("start", [{}, {HTTP_REQUEST_TIMEOUT: "60"}, {ARTIFACT_UPLOAD_TIMEOUT: "-1"}])
def test_upload_timeouts_never_remove_a_key(start):
    environ = NoRemoval(start)
    for _ in range(2):
        with upload_timeouts(TransferLimits(), 20 * GB, environ):
            assert {HTTP_REQUEST_TIMEOUT, ARTIFACT_UPLOAD_TIMEOUT} <= environ.keys()
        assert {HTTP_REQUEST_TIMEOUT, ARTIFACT_UPLOAD_TIMEOUT} <= environ.keys()
    assert {name: environ[name] for name in start} == start  # the user's values are back


def test_the_registry_sets_both_timeouts_before_any_upload(monkeypatch):
    """Set once, before the Pub/Sub and preflight threads start: no upload ever adds or removes them."""
    from hokusai_action.mlflow.registry import MlflowRegistry

    for name in (HTTP_REQUEST_TIMEOUT, ARTIFACT_UPLOAD_TIMEOUT):
        monkeypatch.delenv(name, raising=False)
    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"):
        monkeypatch.delenv(name, raising=False)  # the registry sets them: put them back after the test
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", raising=False)
    MlflowRegistry("http://127.0.0.1:9", experiment="x", timeout=10, transfer_limits=TransferLimits(stall_seconds=5))
    assert os.environ[HTTP_REQUEST_TIMEOUT] == "60"
    assert os.environ[ARTIFACT_UPLOAD_TIMEOUT] == "15"  # one full GCS request: 5 + 100 MiB / 10 MiB/s


def test_a_users_longer_timeout_is_kept_and_a_shorter_one_is_raised_for_uploads():
    longer = {HTTP_REQUEST_TIMEOUT: "7200", ARTIFACT_UPLOAD_TIMEOUT: "-1"}  # -1: GCS without a timeout
    with upload_timeouts(TransferLimits(), 20 * GB, longer) as in_force:
        assert in_force == {HTTP_REQUEST_TIMEOUT: "7200", ARTIFACT_UPLOAD_TIMEOUT: "-1"}
    shorter = {HTTP_REQUEST_TIMEOUT: "120", ARTIFACT_UPLOAD_TIMEOUT: "30"}  # a default meant for 200 MB
    with upload_timeouts(TransferLimits(), 20 * GB, shorter) as in_force:
        assert in_force == {HTTP_REQUEST_TIMEOUT: "1968", ARTIFACT_UPLOAD_TIMEOUT: "70"}
    assert shorter == {HTTP_REQUEST_TIMEOUT: "120", ARTIFACT_UPLOAD_TIMEOUT: "30"}


def test_the_budget_has_a_floor():
    with upload_timeouts(TransferLimits(stall_seconds=2), MIB, {}, floor_seconds=29.5) as in_force:
        assert in_force == {HTTP_REQUEST_TIMEOUT: "30", ARTIFACT_UPLOAD_TIMEOUT: "30"}
    with upload_timeouts(TransferLimits(), 20 * GB, {}, floor_seconds=30) as in_force:
        assert in_force[HTTP_REQUEST_TIMEOUT] == "1968"


def test_set_default_never_overrides_the_user_but_updates_its_own_value():
    environ = {HTTP_REQUEST_TIMEOUT: "5"}
    set_default(HTTP_REQUEST_TIMEOUT, "60", environ)
    assert environ[HTTP_REQUEST_TIMEOUT] == "5"
    environ = {}
    set_default(HTTP_REQUEST_TIMEOUT, "60", environ)
    set_default(HTTP_REQUEST_TIMEOUT, "90", environ)  # a second registry with a longer timeout
    assert environ[HTTP_REQUEST_TIMEOUT] == "90"


def test_the_registry_sizes_the_budget_by_the_largest_file(tmp_path, monkeypatch):
    from hokusai_action.mlflow.registry import MlflowRegistry

    for name in (HTTP_REQUEST_TIMEOUT, "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"):
        monkeypatch.delenv(name, raising=False)  # the registry sets them: put them back after the test
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", raising=False)
    monkeypatch.delenv(ARTIFACT_UPLOAD_TIMEOUT, raising=False)
    model = tmp_path / "model"
    model.mkdir()
    (model / "small.bin").write_bytes(os.urandom(1024))
    with open(model / "big.bin", "wb") as handle:
        handle.truncate(30 * MIB)  # sparse: 30 MiB on paper, nothing on disk
    files = inspect_model(model)
    limits = TransferLimits(stall_seconds=5, min_rate_mib_s=3)
    registry = MlflowRegistry("http://127.0.0.1:9", experiment="x", timeout=10, transfer_limits=limits)
    with registry.upload_timeouts(files) as in_force:
        assert in_force[HTTP_REQUEST_TIMEOUT] == "15" == os.environ[HTTP_REQUEST_TIMEOUT]  # 5 + 30 / 3
    assert os.environ[HTTP_REQUEST_TIMEOUT] == "60"  # the metadata bound the registry set
    # never shorter than HOKUSAI_MLFLOW_TIMEOUT, as the per-request bound was before
    patient = MlflowRegistry("http://127.0.0.1:9", experiment="x", timeout=300, transfer_limits=limits)
    with patient.upload_timeouts(files) as in_force:
        assert in_force[HTTP_REQUEST_TIMEOUT] == "300"


def test_settings_read_the_upload_limits(tmp_path):
    default = load_settings({}, BASE_ENV, cwd=tmp_path)
    assert (default.upload_stall_timeout, default.upload_min_rate) == (60.0, 10.0)
    env = {**BASE_ENV, "HOKUSAI_UPLOAD_STALL_TIMEOUT": "120", "HOKUSAI_UPLOAD_MIN_RATE": "2.5"}
    tuned = load_settings({}, env, cwd=tmp_path)
    assert (tuned.upload_stall_timeout, tuned.upload_min_rate) == (120.0, 2.5)


@pytest.mark.parametrize("name", ["HOKUSAI_UPLOAD_STALL_TIMEOUT", "HOKUSAI_UPLOAD_MIN_RATE"])
@pytest.mark.parametrize("value", ["0", "-1", "fast", "inf"])
def test_a_bad_upload_limit_is_one_clear_error(tmp_path, name, value):
    with pytest.raises(InputError) as raised:
        load_settings({}, {**BASE_ENV, name: value}, cwd=tmp_path)
    assert name in str(raised.value) and value in str(raised.value)
