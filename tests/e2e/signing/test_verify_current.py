"""`model verify` vouches only for what the token holds now, whatever version number is asked for.

A version the token no longer holds (reset to draft, or registered again with other bytes) is a
refusal (exit 1, saying why), never a pass on the version's own tags; `--version 02` is version 2,
checked exactly as `--version 2`; a version that is not a number is a clear exit 2.
"""

from __future__ import annotations

import pytest

from tests.helpers import assert_one_clear_line, register_args
from tests.mlflow_store import stored_copies

pytestmark = [pytest.mark.e2e]


def register(run_cli, token: str, model, *extra: str):
    result = run_cli(*register_args(token, model, "--metric-value", "0.91", "--output", "json", *extra))
    assert result.code == 0, result.stderr
    return result.json


def verify(run_cli, token: str, *extra: str):
    return run_cli("model", "verify", "--token-id", token, "--output", "json", *extra)


def refused(result, *fragments: str) -> dict:
    assert result.code == 1, (result.code, result.stderr)
    report = result.json
    assert report["verified"] is False
    for fragment in fragments:
        assert fragment in report["error"], report["error"]
    return report


def test_a_version_of_a_token_reset_to_draft_is_refused(run_cli, make_token, make_model):
    token = make_token()
    register(run_cli, token, make_model())
    assert verify(run_cli, token, "--version", "1").code == 0
    assert run_cli("token", "reset", token).code == 0

    report = refused(verify(run_cli, token, "--version", "1"), "draft")

    assert report["model_version"] == "1"
    assert not any(check["ok"] for check in report["checks"] if check["name"] == "registration")
    # without --version there is nothing the token holds to check: the token's state forbids it
    assert_one_clear_line(run_cli("model", "verify", "--token-id", token), 3, "draft")


def test_after_a_reset_and_other_bytes_only_the_new_version_verifies(run_cli, make_token, make_model):
    token = make_token()
    first = register(run_cli, token, make_model())
    assert run_cli("token", "reset", token).code == 0
    second = register(run_cli, token, make_model())
    assert (first["model_version"], second["model_version"]) == ("1", "2")

    report = refused(verify(run_cli, token, "--version", "1"), "version 2")

    assert report["model_uri"] == f"models:/hokusai-{token}/1"
    assert verify(run_cli, token, "--version", "2").code == 0
    current = verify(run_cli, token)
    assert current.code == 0, current.stderr
    assert current.json["model_version"] == "2"
    assert current.json["event_id"] == second["event_id"]


def test_version_02_is_version_2_and_gets_every_check(run_cli, make_token, make_model, mlflow_client, tmp_path_factory):
    token = make_token()
    model = make_model()
    first = register(run_cli, token, model)
    zero_padded = verify(run_cli, token, "--version", "01")
    assert zero_padded.code == 0, zero_padded.stderr
    assert zero_padded.json["model_version"] == "1"
    assert zero_padded.json["model_uri"] == first["model_uri"]

    # the stored bytes replaced and the version's digest tag edited to match them
    (stored,) = stored_copies(tmp_path_factory, model / "weights.bin")
    stored.write_bytes(b"replaced" + stored.read_bytes()[8:])
    from hokusai_action.digest.hashing import inspect_model

    tampered = model.parent / "tampered"
    tampered.mkdir()
    for path in model.rglob("*"):
        if path.is_file():
            target = tampered / path.relative_to(model)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(stored.read_bytes() if path.name == "weights.bin" else path.read_bytes())
    mlflow_client.set_model_version_tag(
        f"hokusai-{token}", "1", "hokusai.artifact_digest", inspect_model(tampered).digest
    )

    answers = {given: verify(run_cli, token, "--version", given) for given in ("1", "01", "001")}

    for given, result in answers.items():
        refused(result, "model bytes")
        assert result.json["model_version"] == "1", given
    assert len({result.json["error"] for result in answers.values()}) == 1


@pytest.mark.parametrize("given", [" 1", "1 ", "abc", "0", "-1", "+1", "1.0", "1e3", "٣"])
def test_a_version_that_is_not_a_version_number_is_a_clear_exit_2(run_cli, make_token, make_model, given):
    token = make_token()
    register(run_cli, token, make_model())

    line = assert_one_clear_line(run_cli("model", "verify", "--token-id", token, "--version", given), 2, "--version")

    assert "{" not in line  # no unformatted placeholder in the message or its hint


def test_a_version_mlflow_does_not_have_names_the_token_in_its_hint(run_cli, make_token, make_model):
    token = make_token()
    register(run_cli, token, make_model())

    line = assert_one_clear_line(run_cli("model", "verify", "--token-id", token, "--version", "7"), 1)

    assert "{" not in line and token in line
