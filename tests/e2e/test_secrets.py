"""Secrets never printed: credentials in every place a user puts them, and what vendors print."""

from __future__ import annotations

import pytest

from tests.helpers import register_args

pytestmark = [pytest.mark.e2e]

URI_USER = "uri-user-5d1c"
URI_PASSWORD = "uri-pass-5d1c"


def with_userinfo(url: str, userinfo: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{userinfo}@{rest}"


@pytest.mark.parametrize("debug", [(), ("--debug",)], ids=["plain", "debug"])
def test_credentials_in_the_tracking_uri_are_never_printed(run_cli, make_token, make_model, services, debug):
    uri = with_userinfo(services.mlflow_url.split("@")[-1], f"{URI_USER}:{URI_PASSWORD}")
    token = make_token()
    result = run_cli(*register_args(token, make_model(), *debug), env={"MLFLOW_TRACKING_URI": uri})
    assert result.code == 0, result.stderr
    for leaked in (URI_USER, URI_PASSWORD):
        assert leaked not in result.output
