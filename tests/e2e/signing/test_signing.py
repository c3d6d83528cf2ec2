"""Signed registrations and `model verify`, run as a user runs them, on the real MLflow server and PostgreSQL.

Keys and a small CA are made with ``cryptography`` (tests/signing_keys.py); the signing key is a canary.
Keyless (Sigstore) signing cannot reach Sigstore from here: its test runs the real flow up to the network
call, which a loopback proxy refuses, and checks the state it leaves (README, "Verifiable registrations").
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
from pathlib import Path

import pytest
import sqlalchemy as sa

from hokusai_action.db.schema import events, tokens
from tests.canaries import CANARIES
from tests.helpers import assert_one_clear_line, register_args
from tests.signing_keys import SigningFiles, make_signing_files

pytestmark = [pytest.mark.e2e]

SIGNATURE_KEYS = (
    "method", "identity", "model_bundle_sha256", "statement_sha256", "statement_bundle_sha256", "bundle_uri",
)  # fmt: skip
VERIFY_KEYS = {
    "token_id", "model_name", "model_version", "model_uri", "event_id", "artifact_digest", "verified", "checks",
    "signature", "error",
}  # fmt: skip


@pytest.fixture(scope="session")
def keys(tmp_path_factory) -> SigningFiles:
    return make_signing_files(tmp_path_factory.mktemp("signing"))


def sign_key(keys: SigningFiles) -> tuple[str, ...]:
    return ("--sign", "key", "--signing-key", str(keys.key))


def sign_certificate(keys: SigningFiles) -> tuple[str, ...]:
    return ("--sign", "certificate", "--signing-key", str(keys.key), "--signing-certificate-chain", str(keys.chain))


def verify(run_cli, token: str, *extra: str):
    return run_cli("model", "verify", "--token-id", token, "--output", "json", *extra)


def stored_file(tmp_path_factory, model_id: str, relative: str) -> Path:
    """The file as the MLflow server stores it (--artifacts-destination under the session's temp folder)."""
    found = [
        path
        for path in tmp_path_factory.getbasetemp().rglob(Path(relative).name)
        if "mlartifacts" in path.parts and model_id in path.parts and path.as_posix().endswith(relative)
    ]
    assert len(found) == 1, found
    return found[0]


def event_payload(database, event_id: str) -> dict:
    with database.unit_of_work() as uow:
        return dict(uow.execute(sa.select(events.c.payload).where(events.c.event_id == event_id)).scalar_one())


def token_row(database, token: str) -> dict:
    with database.unit_of_work() as uow:
        return dict(uow.execute(sa.select(tokens).where(tokens.c.token_id == token)).one()._mapping)


def test_key_signed_registration_records_and_verifies(
    run_cli, make_token, make_model, keys, mlflow_client, database, tmp_path
):
    token = make_token()
    model = make_model(files={"weights.bin": b"w" * 70_000, "config/params.json": b"{}", ".gitignore": b"*.tmp\n"})

    result = run_cli(*register_args(token, model, *sign_key(keys), "--output", "json"))

    assert result.code == 0, result.stderr
    out = result.json
    signature = out["signature"]
    assert set(signature) == set(SIGNATURE_KEYS)
    assert signature["method"] == "key"
    public_pem = keys.public_key.read_bytes()
    assert signature["identity"] == "sha256:" + hashlib.sha256(public_pem).hexdigest()
    assert signature["bundle_uri"] == f"runs:/{out['mlflow_run_id']}/hokusai/signature/{out['event_id']}"
    # the version's tags, the token row and the event say the same
    version = mlflow_client.get_model_version(out["model_name"], out["model_version"])
    assert {k: version.tags[f"hokusai.signature.{k}"] for k in SIGNATURE_KEYS} == signature
    row = token_row(database, token)
    assert {k: row[f"signature_{k}"] for k in SIGNATURE_KEYS} == signature
    assert event_payload(database, out["event_id"])["data"]["signature"] == signature
    # the bundles live in the run's artifacts, outside the model tree: the model is its files only
    folder = f"hokusai/signature/{out['event_id']}"
    listed = {a.path for a in mlflow_client.list_artifacts(out["mlflow_run_id"], folder)}
    assert listed == {f"{folder}/model.sig", f"{folder}/registration.json", f"{folder}/registration.json.sig"}
    from mlflow.artifacts import download_artifacts

    bundles = Path(download_artifacts(artifact_uri=signature["bundle_uri"], dst_path=str(tmp_path / "sig")))
    assert hashlib.sha256((bundles / "model.sig").read_bytes()).hexdigest() == signature["model_bundle_sha256"]
    statement = json.loads((bundles / "registration.json").read_text())
    assert statement["artifact_digest"] == out["artifact_digest"] == version.tags["hokusai.artifact_digest"]
    assert (statement["token_id"], statement["model_version"]) == (token, out["model_version"])
    assert statement["gate"]["value"] == 0.91 and statement["gate"]["baseline"] == 0.82
    assert statement["git"]["sha"] == "0123456789abcdef0123456789abcdef01234567"
    assert "metric_provenance" in statement and "registered_at" in statement
    # the signed file set is the digest's: every model file, .gitignore included, nothing else
    envelope = json.loads((bundles / "model.sig").read_text())["dsseEnvelope"]
    resources = json.loads(base64.b64decode(envelope["payload"]))["predicate"]["resources"]
    assert sorted(r["name"] for r in resources) == [".gitignore", "config/params.json", "metrics.json", "weights.bin"]

    checked = verify(run_cli, token, "--public-key", str(keys.public_key))

    assert checked.code == 0, checked.stderr
    report = checked.json
    assert set(report) == VERIFY_KEYS
    assert report["verified"] is True and report["error"] is None
    assert report["artifact_digest"] == out["artifact_digest"]
    assert report["signature"] == signature
    names = {c["name"]: c for c in report["checks"]}
    assert names["model signature"]["ok"] and names["statement signature"]["ok"]
    assert all(c["ok"] for c in report["checks"])
    # without a key: everything but the signatures is checked, and it says so
    plain = run_cli("model", "verify", "--token-id", token)
    assert plain.code == 0, plain.stderr
    assert "not verified: no key given" in plain.stdout


def test_verify_names_the_file_whose_bytes_changed_in_the_artifact_store(
    run_cli, make_token, make_model, keys, mlflow_client, tmp_path_factory
):
    token = make_token()
    model = make_model()
    out = run_cli(*register_args(token, model, *sign_key(keys), "--output", "json")).json
    version = mlflow_client.get_model_version(out["model_name"], out["model_version"])
    stored = stored_file(tmp_path_factory, version.source.rsplit("/", 1)[-1], "weights.bin")
    data = bytearray(stored.read_bytes())
    data[1000] ^= 0x01  # one byte, same size
    stored.write_bytes(bytes(data))

    with_key = verify(run_cli, token, "--public-key", str(keys.public_key))
    without_key = run_cli("model", "verify", "--token-id", token)

    assert with_key.code == 1
    report = with_key.json
    assert report["verified"] is False
    assert "weights.bin" in report["error"] and "bytes changed" in report["error"]
    assert report["artifact_digest"] != out["artifact_digest"]
    error = assert_one_clear_line(without_key, 1, "verification failed", "weights.bin")
    assert "model bytes" in error


def test_verify_names_an_edited_version_tag_and_token_column(
    run_cli, make_token, make_model, keys, mlflow_client, database
):
    token = make_token()
    out = run_cli(*register_args(token, make_model(), *sign_key(keys), "--output", "json")).json
    name, number = out["model_name"], out["model_version"]

    mlflow_client.set_model_version_tag(name, number, "hokusai.metric_value", "0.99")
    edited_tag = verify(run_cli, token, "--public-key", str(keys.public_key))
    unsigned_view = run_cli("model", "verify", "--token-id", token)  # the other two records outvote it
    mlflow_client.set_model_version_tag(name, number, "hokusai.metric_value", repr(0.91))
    with database.unit_of_work() as uow:
        uow.execute(tokens.update().where(tokens.c.token_id == token).values(baseline_value=0.5))
        uow.commit()
    edited_column = verify(run_cli, token, "--public-key", str(keys.public_key))

    assert edited_tag.code == 1
    assert "version tag hokusai.metric_value was edited" in edited_tag.json["error"]
    assert_one_clear_line(unsigned_view, 1, "version tag hokusai.metric_value was edited")
    assert edited_column.code == 1
    assert "tokens.baseline_value was edited" in edited_column.json["error"]
    assert "signed statement" in edited_column.json["error"]


def test_unsigned_registration_fails_verification_with_a_key(run_cli, make_token, make_model, keys):
    token = make_token()
    assert run_cli(*register_args(token, make_model())).code == 0

    with_key = run_cli("model", "verify", "--token-id", token, "--public-key", str(keys.public_key))
    without_key = verify(run_cli, token)

    assert_one_clear_line(with_key, 1, "verification failed", "unsigned")
    assert without_key.code == 0, without_key.stderr
    assert without_key.json["signature"] is None and without_key.json["verified"] is True


def test_a_wrong_key_or_untrusted_ca_is_signature_invalid(run_cli, make_token, make_model, keys):
    key_token, cert_token = make_token(), make_token()
    assert run_cli(*register_args(key_token, make_model(), *sign_key(keys))).code == 0
    assert run_cli(*register_args(cert_token, make_model(), *sign_certificate(keys))).code == 0

    wrong_key = verify(run_cli, key_token, "--public-key", str(keys.other_public_key))
    wrong_ca = verify(run_cli, cert_token, "--certificate-chain", str(keys.other_root))

    for result in (wrong_key, wrong_ca):
        assert result.code == 1, result.stderr
        assert "model signature: signature invalid" in result.json["error"]


def test_certificate_signed_registration_verifies_with_the_root(run_cli, make_token, make_model, keys, mlflow_client):
    token = make_token()
    out = run_cli(*register_args(token, make_model(), *sign_certificate(keys), "--output", "json"))
    assert out.code == 0, out.stderr
    signature = out.json["signature"]
    assert signature["method"] == "certificate"
    assert signature["identity"] == "CN=ci-signer@hokusai.test"

    checked = verify(run_cli, token, "--certificate-chain", str(keys.root))

    assert checked.code == 0, checked.stderr
    assert checked.json["verified"] is True
    assert {c["name"] for c in checked.json["checks"]} >= {"model signature", "statement signature", "model bytes"}


@pytest.mark.parametrize(
    "case",
    [
        "missing-key",
        "not-a-key",
        "public-key",
        "certificate",
        "rsa-key",
        "no-key-given",
        "chain-of-another-key",
        "no-chain",
        "keyless-no-identity",
    ],
)
def test_bad_signing_input_exits_2_before_anything_changes(
    case, run_cli, make_token, make_model, keys, snapshot, tmp_path
):
    token = make_token()
    not_a_key = tmp_path / "notes.pem"
    not_a_key.write_text("just some notes\n")
    args, fragment = {
        "missing-key": (("--sign", "key", "--signing-key", str(tmp_path / "nope.pem")), "cannot be read"),
        "not-a-key": (("--sign", "key", "--signing-key", str(not_a_key)), "is not a PEM private key"),
        "public-key": (
            ("--sign", "key", "--signing-key", str(keys.public_key)),
            f"Signing key {keys.public_key} is a public key; signing needs the private key",
        ),
        "certificate": (
            ("--sign", "key", "--signing-key", str(keys.chain)),
            f"Signing key {keys.chain} is a certificate; signing needs the private key",
        ),
        "rsa-key": (("--sign", "key", "--signing-key", str(keys.rsa_key)), "elliptic-curve"),
        "no-key-given": (("--sign", "key"), "needs a private key"),
        "chain-of-another-key": (
            (
                "--sign",
                "certificate",
                "--signing-key",
                str(keys.key),
                "--signing-certificate-chain",
                str(keys.other_chain),
            ),
            "is not the signing key's",
        ),
        "no-chain": (("--sign", "certificate", "--signing-key", str(keys.key)), "needs the signing certificate"),
        "keyless-no-identity": (("--sign", "sigstore"), "id-token: write"),
    }[case]
    before = snapshot(token)

    result = run_cli(*register_args(token, make_model(), *args))

    assert_one_clear_line(result, 2, fragment)
    assert snapshot(token) == before


def test_signing_key_pem_from_the_environment_is_never_printed(run_cli, make_token, make_model, keys, snapshot):
    """HOKUSAI_SIGNING_KEY holds the canary PEM; the canary watch fails the test if any of it is printed."""
    token, broken_token = make_token(), make_token()
    pem = CANARIES.signing_key_pem
    broken = "\n".join(line for n, line in enumerate(pem.splitlines()) if n != 3)  # a line lost in a copy-paste

    good = run_cli(*register_args(token, make_model(), "--sign", "key", "--debug", "--output", "json"),
                   env={"HOKUSAI_SIGNING_KEY": pem})  # fmt: skip
    before = snapshot(broken_token)
    bad = run_cli(*register_args(broken_token, make_model(), "--sign", "key", "--debug"),
                  env={"HOKUSAI_SIGNING_KEY": broken})  # fmt: skip

    assert good.code == 0, good.stderr
    assert good.json["signature"]["identity"].startswith("sha256:")
    assert bad.code == 2
    assert "from HOKUSAI_SIGNING_KEY is not a PEM private key" in bad.stderr
    assert snapshot(broken_token) == before


def test_inline_signing_key_in_hokusai_yaml_is_refused(run_cli, make_token, make_model, tmp_path, snapshot):
    token = make_token()
    config = tmp_path / "hokusai.yaml"
    config.write_text("signing:\n  method: key\n  key: |\n    -----BEGIN PRIVATE KEY-----\n    MIGHAgEAMBMG\n")
    before = snapshot(token)

    result = run_cli(*register_args(token, make_model(), "--config", str(config)))

    assert_one_clear_line(result, 2, "writes a secret into hokusai.yaml")
    assert snapshot(token) == before


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_keyless_failure_at_the_network_releases_the_claim_and_commits_nothing(
    run_cli, make_token, make_model, mlflow_client, database, httpserver, tmp_path
):
    """The real keyless flow: GitHub's token endpoint (on loopback here) answers, then Sigstore (TUF,
    Fulcio) is asked through a proxy on a closed loopback port, as no network is reachable from here."""
    token = make_token()
    claims = {"job_workflow_ref": "hokusai/example/.github/workflows/r.yml@refs/heads/main"}
    fake_jwt = "e30." + base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=") + "."
    httpserver.expect_request("/token", query_string={"api-version": "2.0", "audience": "sigstore"}).respond_with_json(
        {"value": fake_jwt}
    )
    proxy = f"http://127.0.0.1:{_closed_port()}"
    env = {
        "ACTIONS_ID_TOKEN_REQUEST_URL": httpserver.url_for("/token") + "?api-version=2.0",
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "runner-request-token",
        "HTTPS_PROXY": proxy, "HTTP_PROXY": proxy, "https_proxy": proxy, "http_proxy": proxy,
        "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
        "HOME": str(tmp_path / "home"), "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
    }  # fmt: skip

    result = run_cli(*register_args(token, make_model(), "--sign", "sigstore"), env=env, timeout=240)

    assert_one_clear_line(result, 4, "Keyless signing with Sigstore failed", "the claim was released")
    request, _response = httpserver.log[0]
    assert request.headers["Authorization"] == "bearer runner-request-token"
    row = token_row(database, token)
    assert row["model_status"] == "draft" and row["claim_owner"] is None
    assert row["signature_method"] is None and row["event_id"] is None
    with database.unit_of_work() as uow:
        assert (
            uow.execute(sa.select(sa.func.count()).select_from(events).where(events.c.token_id == token)).scalar() == 0
        )
    # the upload happened before the signing (the statement names the version): a re-run reuses it
    versions = mlflow_client.search_model_versions(f"name = 'hokusai-{token}'")
    assert len(versions) == 1
    assert not any(k.startswith("hokusai.signature.") for k in versions[0].tags)


def test_action_signs_with_the_signing_key_input_masked_first(cli_env, services, make_token, make_model, tmp_path):
    """The action's signing-key input is the PEM: every line of it is masked before anything else is
    printed, and the registration is signed (the canary watch checks nothing of it leaks)."""
    from tests.github_runner import base_inputs, run_entrypoint

    token = make_token()
    model = make_model()
    inputs = {**base_inputs(services, token, model), "sign": "key", "signing-key": CANARIES.signing_key_pem}

    done, _outputs, _summary = run_entrypoint(cli_env, services, tmp_path, inputs)

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    pem_lines = [line for line in CANARIES.signing_key_pem.splitlines() if line.strip()]
    masks = [line.removeprefix("::add-mask::") for line in lines if line.startswith("::add-mask::")]
    assert set(pem_lines) <= set(masks)
    first_other = next(n for n, line in enumerate(lines) if not line.startswith("::add-mask::"))
    assert all(lines.index(f"::add-mask::{line}") < first_other for line in pem_lines)
    with_signature = verify_in_env(cli_env, token)
    assert with_signature["signature"]["method"] == "key"


def verify_in_env(cli_env, token: str) -> dict:
    from tests.helpers import cli_command, run_captured

    done = run_captured(
        cli_command("model", "verify", "--token-id", token, "--output", "json"), env=cli_env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_verify_checks_a_local_copy_with_model_path(run_cli, make_token, make_model, keys, tmp_path):
    import shutil

    token = make_token()
    model = make_model()
    assert run_cli(*register_args(token, model, *sign_key(keys))).code == 0
    copy = tmp_path / "copy"
    shutil.copytree(model, copy)

    same = verify(run_cli, token, "--model-path", str(copy), "--public-key", str(keys.public_key))
    (copy / "config" / "params.json").write_bytes(b'{"lr": 1}')
    changed = verify(run_cli, token, "--model-path", str(copy), "--public-key", str(keys.public_key))

    assert same.code == 0, same.stderr
    assert changed.code == 1
    assert "config/params.json" in changed.json["error"]


@pytest.mark.parametrize(
    ("case", "code", "fragment"),
    [
        ("token-missing", 3, "does not exist"),
        ("not-registered", 3, "has no registration to verify"),
        ("identity-without-issuer", 2, "--identity needs --issuer"),
        ("key-and-chain", 2, "Give one way to verify signatures"),
        ("unreadable-public-key", 2, "cannot be used"),
        ("mlflow-down", 4, "MLflow"),
    ],
)
def test_verify_failures_that_are_not_mismatches_use_the_usual_exit_codes(
    case, code, fragment, run_cli, make_token, make_model, keys, tmp_path
):
    token = make_token()
    if case not in ("token-missing", "not-registered"):
        assert run_cli(*register_args(token, make_model())).code == 0
    args, env = {
        "token-missing": ((), {}),
        "not-registered": ((), {}),
        "identity-without-issuer": (("--identity", "https://github.com/h/x/.github/workflows/r.yml@main"), {}),
        "key-and-chain": (("--public-key", str(keys.public_key), "--certificate-chain", str(keys.root)), {}),
        "unreadable-public-key": (("--public-key", str(tmp_path / "nope.pub")), {}),
        "mlflow-down": ((), {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{_closed_port()}",
                             "HOKUSAI_MLFLOW_TIMEOUT": "2"}),
    }[case]  # fmt: skip
    target = "NOSUCHTOKEN" if case == "token-missing" else token

    result = run_cli("model", "verify", "--token-id", target, *args, env=env)

    assert_one_clear_line(result, code, fragment)


def test_reset_clears_the_signature_and_a_re_run_reports_it(run_cli, make_token, make_model, keys, database):
    token = make_token()
    model = make_model()
    first = run_cli(*register_args(token, model, *sign_key(keys), "--output", "json")).json
    again = run_cli(*register_args(token, model, "--output", "json"))  # idempotent re-run, no --sign
    assert again.code == 0 and again.json["signature"] == first["signature"]

    reset = run_cli("token", "reset", token, "--output", "json")

    assert reset.code == 0, reset.stderr
    assert reset.json["cleared"]["signature_method"] == "key"
    row = token_row(database, token)
    assert all(row[f"signature_{key}"] is None for key in SIGNATURE_KEYS)


def test_keyless_verification_without_sigstore_is_exit_4_not_a_verdict(run_cli, make_token, make_model, keys, tmp_path):
    """--identity/--issuer needs Sigstore's trust root (TUF, over the network): unreachable here, as
    through a proxy on a closed loopback port. That is an outage (exit 4), never "signature invalid"."""
    token = make_token()
    assert run_cli(*register_args(token, make_model(), *sign_key(keys))).code == 0
    proxy = f"http://127.0.0.1:{_closed_port()}"
    env = {
        "HTTPS_PROXY": proxy, "HTTP_PROXY": proxy, "https_proxy": proxy, "http_proxy": proxy,
        "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
        "HOME": str(tmp_path / "home"), "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
    }  # fmt: skip

    result = run_cli(
        "model", "verify", "--token-id", token, "--identity", "https://github.com/h/x/.github/workflows/r.yml@main",
        "--issuer", "https://token.actions.githubusercontent.com", env=env, timeout=240,
    )  # fmt: skip

    assert_one_clear_line(result, 4, "Sigstore's trust root could not be fetched")


def test_links_inside_the_model_are_signed_as_the_digest_reads_them(run_cli, make_token, make_model, keys, tmp_path):
    """digest.py follows links inside the model (a folder link too); model-signing's own walk does not
    enter linked folders, so the signed file set would differ: it is given the digest's file set."""
    import os

    token = make_token()
    model = make_model(files={"shards/part-0.bin": b"a" * 5000, "weights.bin": b"w" * 3000})
    os.symlink("shards", model / "current")  # a folder link
    os.symlink("weights.bin", model / "latest.bin")  # a file link

    registered = run_cli(*register_args(token, model, *sign_key(keys), "--output", "json"))
    checked = verify(run_cli, token, "--public-key", str(keys.public_key))

    assert registered.code == 0, registered.stderr
    assert checked.code == 0, checked.stderr
    assert checked.json["verified"] is True


def _digest_of(folder: Path) -> str:
    from hokusai_action.digest.hashing import inspect_model

    return inspect_model(folder).digest


def test_re_registration_after_reset_with_a_new_value_refreshes_the_reused_versions_tags(
    run_cli, make_token, make_model, mlflow_client
):
    """The same bytes reuse the version; its gate tags must say what the new row and event say."""
    token = make_token()
    model = make_model()
    first = run_cli(*register_args(token, model, "--output", "json"))
    assert first.code == 0, first.stderr
    assert run_cli("token", "reset", token).code == 0

    again = run_cli(*register_args(token, model, "--metric-value", "0.95", "--output", "json", baseline="0.9"))
    checked = verify(run_cli, token)

    assert again.code == 0, again.stderr
    assert again.json["model_version"] == first.json["model_version"]  # reused, not a new version
    tags = mlflow_client.get_model_version(again.json["model_name"], again.json["model_version"]).tags
    assert (tags["hokusai.metric_value"], tags["hokusai.baseline"]) == (repr(0.95), repr(0.9))
    assert tags["hokusai.artifact_digest"] == first.json["artifact_digest"]
    assert checked.code == 0, checked.stdout + checked.stderr
    assert checked.json["verified"] is True


def test_verify_blames_the_bytes_when_the_digest_tag_was_edited_to_match(
    run_cli, make_token, make_model, mlflow_client, tmp_path_factory, tmp_path
):
    import shutil

    token = make_token()
    model = make_model()
    out = run_cli(*register_args(token, model, "--output", "json")).json
    version = mlflow_client.get_model_version(out["model_name"], out["model_version"])
    stored = stored_file(tmp_path_factory, version.source.rsplit("/", 1)[-1], "weights.bin")
    stored.write_bytes(b"replaced by someone with write access to the artifact store")
    copy = tmp_path / "replaced"
    shutil.copytree(model, copy)
    (copy / "weights.bin").write_bytes(stored.read_bytes())
    mlflow_client.set_model_version_tag(out["model_name"], out["model_version"], "hokusai.artifact_digest",
                                        _digest_of(copy))  # fmt: skip

    checked = verify(run_cli, token)
    plain = run_cli("model", "verify", "--token-id", token)

    assert checked.code == 1
    assert checked.json["error"].startswith("model bytes: ")
    assert "model bytes changed (the version tag was edited to match)" in checked.json["error"]
    assert "was edited:" not in checked.json["error"]  # the honest records are not blamed
    assert_one_clear_line(plain, 1, "the version tag was edited to match")


def test_verify_accepts_a_pruned_event_row(run_cli, make_token, make_model, mlflow_client, database):
    from hokusai_action.db.schema import event_deliveries

    token = make_token()
    out = run_cli(*register_args(token, make_model(), "--output", "json")).json
    with database.unit_of_work() as uow:  # the site deleted its old events
        uow.execute(event_deliveries.delete().where(event_deliveries.c.event_id == out["event_id"]))
        uow.execute(events.delete().where(events.c.event_id == out["event_id"]))
        uow.commit()

    pruned = verify(run_cli, token)
    mlflow_client.set_model_version_tag(out["model_name"], out["model_version"], "hokusai.metric_value", "0.99")
    edited = verify(run_cli, token)

    assert pruned.code == 0, pruned.stdout + pruned.stderr
    checks = {c["name"]: c for c in pruned.json["checks"]}
    assert checks["event"] == {"name": "event", "ok": True, "detail": "event row not found (pruned)"}
    assert not any("event data" in c["detail"] for c in pruned.json["checks"])
    assert edited.code == 1  # the tag and the row must still agree
    assert "hokusai.metric_value" in edited.json["error"]


@pytest.mark.parametrize("how", ["emptied", "removed"])
def test_verify_of_a_version_whose_stored_files_are_gone_is_a_mismatch(
    how, run_cli, make_token, make_model, mlflow_client, tmp_path_factory
):
    import shutil

    token = make_token()
    out = run_cli(*register_args(token, make_model(), "--output", "json")).json
    version = mlflow_client.get_model_version(out["model_name"], out["model_version"])
    artifacts = stored_file(tmp_path_factory, version.source.rsplit("/", 1)[-1], "weights.bin").parent
    if how == "emptied":
        for child in list(artifacts.iterdir()):
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    else:
        shutil.rmtree(artifacts)

    checked = verify(run_cli, token)
    plain = run_cli("model", "verify", "--token-id", token)

    assert checked.code == 1, checked.stdout + checked.stderr
    assert "the registered version holds no files" in checked.json["error"]
    assert_one_clear_line(plain, 1, "the registered version holds no files")


def test_each_registration_keeps_its_own_signature_bundles(
    run_cli, make_token, make_model, keys, database, mlflow_client, tmp_path
):
    """A reset token registered again with the same bytes reuses the version (and its run): the earlier
    registration's bundles must stay as its event recorded them."""
    from mlflow.artifacts import download_artifacts

    token = make_token()
    model = make_model()
    first = run_cli(*register_args(token, model, *sign_key(keys), "--output", "json"))
    assert first.code == 0, first.stderr
    assert run_cli("token", "reset", token).code == 0
    second = run_cli(*register_args(token, model, *sign_key(keys), "--output", "json"))
    assert second.code == 0, second.stderr

    assert second.json["mlflow_run_id"] == first.json["mlflow_run_id"]
    for out in (first.json, second.json):
        recorded = event_payload(database, out["event_id"])["data"]["signature"]
        bundles = Path(
            download_artifacts(artifact_uri=recorded["bundle_uri"], dst_path=str(tmp_path / out["event_id"]))
        )
        assert hashlib.sha256((bundles / "model.sig").read_bytes()).hexdigest() == recorded["model_bundle_sha256"]
        assert hashlib.sha256((bundles / "registration.json").read_bytes()).hexdigest() == recorded["statement_sha256"]
        assert recorded["bundle_uri"] == f"runs:/{out['mlflow_run_id']}/hokusai/signature/{out['event_id']}"
    checked = verify(run_cli, token, "--public-key", str(keys.public_key))
    assert checked.code == 0, checked.stdout + checked.stderr
    assert checked.json["signature"]["bundle_uri"].endswith(second.json["event_id"])
