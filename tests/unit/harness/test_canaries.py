"""The canary checker of tests/conftest.py can fail: each place it scans flags a planted canary."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from urllib.parse import quote

import pytest

from tests.canaries import CANARIES, CanaryWatch, find_canaries

pytestmark = [pytest.mark.unit]

DB_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/site"


def sqlalchemy_quote(text: str) -> str:
    return text.replace(":", "%3A").replace("@", "%40").replace("/", "%2F")


@pytest.mark.parametrize(
    "shown",
    [
        CANARIES.database_password,
        quote(CANARIES.database_password, safe=""),
        quote(CANARIES.database_password, safe="").lower(),
        sqlalchemy_quote(CANARIES.database_password),
        quote(quote(CANARIES.database_password, safe=""), safe=""),
        CANARIES.database_url(DB_URL),
    ],
    ids=["raw", "quoted", "lower-hex", "sqlalchemy", "twice", "in-url"],
)
def test_the_database_canary_is_found_in_any_encoding(shown: str) -> None:
    assert find_canaries(f"error: {shown} (x)") == [CANARIES.database_password]


def test_every_canary_is_found_and_clean_text_is_not() -> None:
    uri = CANARIES.tracking_uri("http://127.0.0.1:5000")
    assert set(find_canaries(f"View run at: {uri}/#/runs/1")) == {CANARIES.uri_user, CANARIES.uri_password}
    assert find_canaries(f"Bearer {CANARIES.tracking_token}") == [CANARIES.tracking_token]
    body = CANARIES.webhook_secret.removeprefix("whsec_")
    assert CANARIES.webhook_secret in find_canaries(f"key={CANARIES.webhook_secret}")
    assert find_canaries(f"key={body.rstrip('=')}") == [body.rstrip("=")]
    assert find_canaries("View run at: http://***@127.0.0.1:5000 postgresql+psycopg2://postgres:***@db") == []


@pytest.mark.parametrize(
    "shown",
    [
        # requests' InvalidHeader quotes the header it refuses: a token with a trailing newline
        "in header value: " + repr(f"Bearer {CANARIES.tracking_token}\n"),
        repr({"token": CANARIES.tracking_token}),
        json.dumps({"token": CANARIES.tracking_token}),
    ],
    ids=["newline-repr", "repr", "json"],
)
def test_a_quoted_canary_is_found(shown: str) -> None:
    assert CANARIES.tracking_token not in shown  # the backslash is doubled: the raw value is not there
    assert find_canaries(shown) == [CANARIES.tracking_token]


def test_the_basic_auth_header_of_the_tracking_uri_is_found() -> None:
    header = "Basic " + base64.b64encode(f"{CANARIES.uri_user}:{CANARIES.uri_password}".encode()).decode()
    assert find_canaries(f"the proxy says: Authorization: {header}") == [CANARIES.basic_credentials.rstrip("=")]
    assert find_canaries(f"unpadded {header.rstrip('=')}") == [CANARIES.basic_credentials.rstrip("=")]


def test_add_mask_lines_are_the_runners_and_not_a_leak() -> None:
    text = f"::add-mask::{CANARIES.tracking_token}\n::add-mask::{quote(CANARIES.database_password)}\nok\n"
    assert find_canaries(text) == []
    assert find_canaries(text + f"echo {CANARIES.tracking_token}\n") == [CANARIES.tracking_token]


def test_a_process_that_prints_a_canary_is_flagged(tmp_path) -> None:
    # Popen, not subprocess.run: the autouse watch records run(), and this canary must stay in this test
    leaky = f"import sys; print('connecting to {CANARIES.database_url(DB_URL)}', file=sys.stderr)"
    process = subprocess.Popen([sys.executable, "-c", leaky], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = process.communicate(timeout=60)
    watch = CanaryWatch()
    watch.record_process(["hokusai-ml-platform", "model", "register"], out, err, env=None)
    leaks = watch.leaks()
    assert leaks == [f"stderr of `hokusai-ml-platform model register`: {CANARIES.database_password!r}"]


def test_a_canary_in_the_step_summary_or_outputs_file_is_flagged(tmp_path) -> None:
    summary, outputs = tmp_path / "summary.md", tmp_path / "outputs"
    summary.write_text(f"[MLflow]({CANARIES.tracking_uri('http://127.0.0.1:5000')})\n")
    outputs.write_text("status=registered\n")
    watch = CanaryWatch()
    watch.record_process(
        ["entrypoint.py"], "", "", env={"GITHUB_STEP_SUMMARY": str(summary), "GITHUB_OUTPUT": str(outputs)}
    )
    assert sorted(watch.leaks()) == [
        f"file summary.md: {CANARIES.uri_password!r}",
        f"file summary.md: {CANARIES.uri_user!r}",
    ]


def test_a_canary_in_a_stored_payload_is_flagged() -> None:
    watch = CanaryWatch()
    watch.record("events row e-1", '{"data": {"model_uri": "' + quote(CANARIES.tracking_token) + '"}}')
    watch.record("MLflow run r-1", '{"params": [{"key": "token_id", "value": "XRAY"}]}')
    assert watch.leaks() == [f"events row e-1: {CANARIES.tracking_token!r}"]


def test_a_clean_watch_reports_nothing() -> None:
    watch = CanaryWatch()
    watch.record_process(["x"], b"registered\n", b"", env=None)
    assert watch.leaks() == []
