"""An artifact upload answered by a redirect stored nothing: the run stops (exit 4), nothing is registered.

Behind an authenticating proxy whose session lapsed, ``PUT <artifact>`` is answered ``302`` to a login
page. Followed, ``requests`` turns it into a bodyless ``GET`` of that page, which answers ``200``: the
file looks stored, and a digest of bytes that exist nowhere would be registered. Against the real
MLflow server, through a loopback proxy (tests/upload_proxy.py, ``login``)."""

from __future__ import annotations

import os

import pytest

from tests.helpers import assert_one_clear_line, register_args
from tests.upload_proxy import UploadProxy

pytestmark = [pytest.mark.e2e]


@pytest.fixture
def login_proxy(services):
    proxy = UploadProxy(services.mlflow_url, mode="login")
    yield proxy
    proxy.close()


def test_an_upload_redirected_to_a_login_page_registers_nothing(run_cli, make_token, make_model, login_proxy, snapshot):
    token = make_token()
    model = make_model(files={"weights.bin": os.urandom(256 * 1024)}, metrics=False)
    before = snapshot(token)

    result = run_cli(
        *register_args(token, model, "--metric-value", "0.91"), env={"MLFLOW_TRACKING_URI": login_proxy.url}
    )

    assert_one_clear_line(result, 4, "302", "weights.bin")
    assert login_proxy.uploads  # the upload was tried, and answered by the redirect
    after = snapshot(token)
    assert after.versions == before.versions == ()
    assert after.events == before.events
    assert after.token["model_status"] == "draft"  # the claim was given back
    assert after.token["artifact_digest"] is None
