"""--sign and its key material in the settings: layering, the key's PEM only from the environment,
every secret registered for redaction, and a bad key refused before anything changes."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from hokusai_action.errors import InputError
from hokusai_action.redact import redact
from hokusai_action.settings.loader import load_settings
from hokusai_action.signing.signer import ModelSigner
from tests.canaries import CANARIES

BASE_ENV = {"HOKUSAI_HOME": "/tmp/hokusai-unit"}

pytestmark = [pytest.mark.usefixtures("fresh_secrets")]


def load(tmp_path: Path, flags=None, env=None, yaml_text: str | None = None):
    if yaml_text is not None:
        (tmp_path / "hokusai.yaml").write_text(textwrap.dedent(yaml_text), encoding="utf-8")
    return load_settings(flags or {}, {**BASE_ENV, **(env or {})}, cwd=tmp_path)


def test_signing_is_off_by_default(tmp_path: Path) -> None:
    settings = load(tmp_path)
    assert settings.sign == "none" and settings.signing_key_path is None and settings.signing_certificate_chain == ()


def test_flag_beats_environment_beats_hokusai_yaml(tmp_path: Path) -> None:
    yaml_text = "signing: {method: certificate, key_path: keys/k.pem, certificate_chain: [keys/a.pem, keys/b.pem]}\n"
    from_yaml = load(tmp_path, yaml_text=yaml_text)
    assert from_yaml.sign == "certificate"
    assert from_yaml.signing_key_path == str(tmp_path / "keys/k.pem")  # relative to hokusai.yaml
    assert from_yaml.signing_certificate_chain == (str(tmp_path / "keys/a.pem"), str(tmp_path / "keys/b.pem"))
    from_env = load(tmp_path, env={"HOKUSAI_SIGN": "key", "HOKUSAI_SIGNING_CERTIFICATE_CHAIN": "/c1.pem,/c2.pem"})
    assert from_env.sign == "key" and from_env.signing_certificate_chain == ("/c1.pem", "/c2.pem")
    from_flag = load(
        tmp_path, flags={"sign": "none", "signing_certificate_chain": ("/x.pem",)}, env={"HOKUSAI_SIGN": "key"}
    )
    assert from_flag.sign == "none" and from_flag.signing_certificate_chain == ("/x.pem",)


def test_signing_key_flag_beats_the_pem_in_the_environment(tmp_path: Path) -> None:
    env = {"HOKUSAI_SIGNING_KEY": CANARIES.signing_key_pem}
    assert load(tmp_path, env=env).signing_key_pem == CANARIES.signing_key_pem
    flagged = load(tmp_path, flags={"signing_key": "/keys/k.pem"}, env=env)
    assert flagged.signing_key_path == "/keys/k.pem" and flagged.signing_key_pem is None


def test_an_unknown_method_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="Unknown signing method 'gpg'"):
        load(tmp_path, env={"HOKUSAI_SIGN": "gpg"})


@pytest.mark.parametrize(
    "yaml_text",
    [
        "signing:\n  key: |\n    -----BEGIN PRIVATE KEY-----\n    MIGHAgEAMBMG\n",
        'signing:\n  key_path: "-----BEGIN PRIVATE KEY-----\\nMIGHAgEAMBMG"\n',
    ],
    ids=["key", "key_path-holding-a-pem"],
)
def test_a_private_key_inline_in_hokusai_yaml_is_refused(tmp_path: Path, yaml_text: str) -> None:
    with pytest.raises(InputError, match=r"writes a secret into hokusai\.yaml"):
        load(tmp_path, yaml_text=yaml_text)


def test_the_key_pem_is_registered_for_redaction_and_kept_out_of_repr(tmp_path: Path) -> None:
    pem = CANARIES.signing_key_pem
    settings = load(tmp_path, env={"HOKUSAI_SIGNING_KEY": pem})
    assert settings.signing_key_pem == pem
    assert pem not in repr(settings)
    second_line = pem.splitlines()[2]
    assert second_line not in redact(f"oops: {pem}") and second_line not in redact(f"line: {second_line}")


def test_ci_run_url_comes_from_github_variables(tmp_path: Path) -> None:
    env = {"GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "h/x", "GITHUB_RUN_ID": "7",
           "GITHUB_RUN_ATTEMPT": "2"}  # fmt: skip
    assert load(tmp_path, env=env).ci_run_url == "https://github.com/h/x/actions/runs/7/attempts/2"
    assert load(tmp_path, env={**env, "HOKUSAI_CI_RUN_URL": "https://ci/1"}).ci_run_url == "https://ci/1"


def test_a_signer_reads_nothing_until_checked(tmp_path: Path) -> None:
    signer = ModelSigner("key", key_path=str(tmp_path / "missing.pem"))  # built in wiring: no I/O
    with pytest.raises(InputError, match="cannot be read"):
        signer.check()
    assert "missing" not in repr(ModelSigner("key", key_pem=CANARIES.signing_key_pem))
    assert CANARIES.signing_key_pem not in repr(ModelSigner("key", key_pem=CANARIES.signing_key_pem))
