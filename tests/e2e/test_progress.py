"""Progress as a user sees it from the CLI: lines on stderr in CI, stdout kept for --output json, --quiet."""

from __future__ import annotations

import os
import re

import pytest

from tests.helpers import register_args

pytestmark = [pytest.mark.e2e]

CONTROL = re.compile(r"[\r\x1b\x08]")


def files(count: int, size: int = 64 * 1024) -> dict[str, bytes]:
    return {f"shard-{i:02d}.bin": os.urandom(size) for i in range(count)}


def test_in_ci_a_long_upload_prints_plain_lines_and_stdout_stays_json(run_cli, make_token, make_model) -> None:
    """More files than upload threads, each thread held 2.5 s after its file: the upload runs ~5 s."""
    token, model = make_token(), make_model(files=files(12))
    result = run_cli(
        *register_args(token, model, "--output", "json"),
        env={"CI": "true", "HOKUSAI_FAILPOINT": "mid_upload:sleep:2.5"},
    )
    assert result.code == 0, result.stderr
    data = result.json  # stdout is the result alone
    assert data["status"] == "registered"
    assert data["upload"]["files"] == 13  # the shards and metrics.json
    assert data["upload"]["bytes"] == 12 * 64 * 1024 + len((model / "metrics.json").read_bytes())
    assert not CONTROL.search(result.stderr), repr(result.stderr)
    lines = result.stderr.splitlines()
    progress = [line for line in lines if line.startswith("uploading: ")]
    assert progress, result.stderr
    assert re.fullmatch(r"uploading: \d+% \(.+ of .+, \d+ of 13 files\), .+/s.*", progress[0]), progress
    ends = [line for line in lines if line.startswith("uploaded ")]
    assert len(ends) == 1 and re.fullmatch(r"uploaded 768 KiB in \d+\.\d s \(.+/s\), 13 files", ends[0]), ends


def test_quiet_prints_no_progress_and_a_short_upload_only_its_end_line(run_cli, make_token, make_model) -> None:
    token, model = make_token(), make_model(files=files(3))
    loud = run_cli(*register_args(token, model))
    assert loud.code == 0, loud.stderr
    assert [line for line in loud.stderr.splitlines() if line.startswith(("uploaded ", "uploading"))] == [
        line for line in loud.stderr.splitlines() if re.fullmatch(r"uploaded .+ in .+ s \(.+/s\), 4 files", line)
    ]
    assert "uploaded " in loud.stderr

    other, other_model = make_token(), make_model(files=files(3))
    quiet = run_cli(*register_args(other, other_model, "--quiet", "--output", "json"))
    assert quiet.code == 0, quiet.stderr
    assert not [line for line in quiet.stderr.splitlines() if line.startswith(("uploaded ", "uploading"))]
    assert quiet.json["upload"]["files"] == 4  # still reported in the result

    rerun = run_cli(*register_args(token, model, "--output", "json"))  # hashed, nothing uploaded
    assert rerun.code == 0, rerun.stderr
    assert "upload" not in rerun.json
    assert not [line for line in rerun.stderr.splitlines() if line.startswith(("uploaded ", "uploading"))]
