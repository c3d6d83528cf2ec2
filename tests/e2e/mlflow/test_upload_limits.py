"""Upload timeouts follow the model's size (issue 9): a slow but steady upload that takes longer than
the per-request timeout succeeds, and a server that goes silent is given up within a bound computed
from the settings, with exit 4; a SIGTERM mid-upload gives the claim back without sending the rest.
Against the real MLflow server, through a loopback proxy (tests/upload_proxy.py) that makes only the
artifact uploads slow or silent."""

from __future__ import annotations

import os
import time

import pytest

from hokusai_action.mlflow.transfer_limits import MIB, TransferLimits
from tests.helpers import assert_one_clear_line, register_args

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

STALL = 2  # HOKUSAI_UPLOAD_STALL_TIMEOUT in these tests: two seconds of silence is an outage
MAX_RETRIES = 3  # MLflow's retries of a request that timed out (the registry's default bound)
# MLflow's own backoff setting, a whole number (the registry keeps a value the user set): the silent-server
# test sets 0 instead of the registry's 1, so its retries wait only the jitter (the registry's 0.5 s)
BACKOFF_FACTOR = 0
BACKOFF_JITTER = 0.5


def test_a_slow_steady_upload_longer_than_the_request_timeout_succeeds(
    run_cli, make_token, make_model, proxy_for, mlflow_client
):
    # the server takes 3 s after the last byte to answer (it passes the file on at 1 MiB/s), while the
    # user's per-request timeout is 2 s: the size-derived budget, 2 + 3 MiB / 0.5 MiB/s = 8 s, covers it
    proxy = proxy_for("slow", rate=MIB)
    token = make_token()
    model = make_model(files={"weights.bin": os.urandom(3 * MIB)}, metrics=False)
    env = {
        "MLFLOW_TRACKING_URI": proxy.url,
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(STALL),
        "HOKUSAI_MLFLOW_TIMEOUT": str(STALL),
        "HOKUSAI_UPLOAD_STALL_TIMEOUT": str(STALL),
        "HOKUSAI_UPLOAD_MIN_RATE": "0.5",
    }
    result = run_cli(*register_args(token, model, "--metric-value", "0.91", "--output", "json"), env=env)

    assert result.code == 0, result.stderr
    assert result.json["status"] == "registered"
    [(path, size, seconds)] = proxy.uploads  # one attempt: nothing timed out and was sent again
    assert path.endswith("/weights.bin") and size == 3 * MIB
    assert seconds is not None and seconds > STALL  # longer than any per-request timeout in force
    versions = mlflow_client.search_model_versions(f"name = 'hokusai-{token}'")
    assert [v.version for v in versions] == ["1"]


def test_a_steady_transfer_is_never_cut_by_its_budget(run_cli, make_token, make_model, proxy_for):
    """The premise of the budget: MLflow's timeout bounds silence between bytes, not the transfer.
    6 MiB trickling at 1.5 MiB/s take 4 s against a budget of 3 s (2 + 6 MiB / 16 MiB/s), in one
    attempt. (This holds on every version of the tool: it checks MLflow and requests, as relied on.)"""
    proxy = proxy_for("trickle", rate=3 * MIB // 2)
    token = make_token()
    model = make_model(files={"weights.bin": os.urandom(6 * MIB)}, metrics=False)
    budget = TransferLimits(stall_seconds=STALL, min_rate_mib_s=16).wait_for(6 * MIB)
    env = {
        "MLFLOW_TRACKING_URI": proxy.url,
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(STALL),
        "HOKUSAI_MLFLOW_TIMEOUT": str(STALL),
        "HOKUSAI_UPLOAD_STALL_TIMEOUT": str(STALL),
        "HOKUSAI_UPLOAD_MIN_RATE": "16",
    }
    result = run_cli(*register_args(token, model, "--metric-value", "0.91"), env=env)

    assert result.code == 0, result.stderr
    [(_, size, seconds)] = proxy.uploads
    assert size == 6 * MIB and seconds is not None and seconds > budget == 3


def test_a_server_that_goes_silent_fails_within_the_bound_with_exit_4(
    run_cli, make_token, make_model, proxy_for, snapshot
):
    proxy = proxy_for("silent")
    token = make_token()
    model = make_model(files={"weights.bin": os.urandom(MIB)}, metrics=False)
    env = {
        "MLFLOW_TRACKING_URI": proxy.url,
        "HOKUSAI_MLFLOW_TIMEOUT": str(STALL),  # the budget's floor
        "HOKUSAI_UPLOAD_STALL_TIMEOUT": "1",
        "HOKUSAI_UPLOAD_MIN_RATE": "8",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": str(BACKOFF_FACTOR),
    }
    derived = TransferLimits(stall_seconds=1, min_rate_mib_s=8).wait_for(MIB)  # ceil(1 + 1/8) = 2 s
    budget = max(derived, STALL)  # 2 s per attempt, the floor's too
    # each attempt waits out the budget; urllib3 sleeps 0, then up to the jitter, between the retries
    backoff = sum(BACKOFF_FACTOR * 2**n for n in range(1, MAX_RETRIES)) + MAX_RETRIES * BACKOFF_JITTER
    bound = (MAX_RETRIES + 1) * budget + backoff
    before = snapshot(token)

    started = time.monotonic()
    result = run_cli(*register_args(token, model, "--metric-value", "0.91"), env=env, timeout=bound + 60)
    elapsed = time.monotonic() - started

    assert_one_clear_line(result, 4, "uploading the model")
    assert len(proxy.uploads) == MAX_RETRIES + 1  # the first attempt and MLflow's retries, no more
    assert all(seconds is None for _, _, seconds in proxy.uploads)
    # the attempts alone take (retries + 1) x budget; start-up and the other calls are the margin
    assert (MAX_RETRIES + 1) * budget <= elapsed < bound + 20, (elapsed, bound)
    after = snapshot(token)
    assert after.versions == before.versions == ()
    assert after.token["model_status"] == "draft"  # the claim was given back: a re-run can go on


def test_sigterm_mid_upload_gives_the_claim_back_without_sending_the_rest(
    run_cli, make_token, make_model, proxy_for, snapshot
):
    """`docker stop` waits 10 s before SIGKILL: the claim must be given back well before the biggest file
    would have been sent. The small file reaches the store, the failpoint sends SIGTERM while the big
    one trickles at 1 MiB/s (24 s in full); the big one stops at its next block."""
    proxy = proxy_for("trickle", rate=MIB)
    token = make_token()
    big = 24 * MIB
    model = make_model(files={"a-small.bin": os.urandom(1024), "weights.bin": os.urandom(big)}, metrics=False)
    before = snapshot(token)

    started = time.monotonic()
    result = run_cli(
        *register_args(token, model, "--metric-value", "0.91"),
        env={"MLFLOW_TRACKING_URI": proxy.url, "HOKUSAI_FAILPOINT": "mid_upload:term"},
    )
    elapsed = time.monotonic() - started

    assert result.code == 143, (result.code, result.stderr)  # 128 + SIGTERM, as the CLI's handler exits
    assert "Traceback" not in result.output
    # start-up and the small file take a few seconds; sending the big file in full would take 24 more
    assert elapsed < 15, elapsed
    after = snapshot(token)
    assert after.versions == before.versions == ()
    assert after.token["model_status"] == "draft"  # the claim was given back
    assert after.token["claim_owner"] is None
