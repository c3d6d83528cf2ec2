"""Which Google identity doctor reports, from generated credential files of each type (fake keys)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hokusai_action.errors import InputError
from hokusai_action.signing.google_identity import identity_for
from tests.google_credentials import WIF_AUDIENCE, authorized_user, github_wif, service_account

pytestmark = [pytest.mark.unit]


def write(tmp_path: Path, info: dict, name: str = "creds.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(info))
    return path


def test_service_account_key_names_the_email_never_the_key(tmp_path):
    info, secrets = service_account()
    path = write(tmp_path, info)

    line = identity_for("gcs", {"GOOGLE_APPLICATION_CREDENTIALS": str(path), "HOME": str(tmp_path)}).describe()

    assert line == (
        "service_account, registrar@hokusai-prod.iam.gserviceaccount.com (key file, project hokusai-prod), "
        f"file {path} (GOOGLE_APPLICATION_CREDENTIALS)"
    )
    assert not [s for s in secrets if s in line]


def test_github_workload_identity_federation_names_provider_and_target(tmp_path):
    info, secrets = github_wif()
    path = write(tmp_path, info, "gha-creds-0123456789abcdef.json")

    line = identity_for("pubsub", {"GOOGLE_APPLICATION_CREDENTIALS": str(path)}).describe()

    assert line.startswith("external_account, Workload Identity Federation, ")
    assert f"provider {WIF_AUDIENCE}" in line
    assert "impersonating deployer@hokusai-prod.iam.gserviceaccount.com" in line
    assert "fetched from pipelines.actions.githubusercontent.com (GitHub Actions OIDC)" in line
    assert line.endswith(f"file {path} (GOOGLE_APPLICATION_CREDENTIALS)")
    assert not [s for s in secrets if s in line]
    assert "Bearer" not in line


def test_direct_workload_identity_federation_says_no_impersonation(tmp_path):
    info, secrets = github_wif(impersonate=False)
    line = identity_for("gcs", {"GOOGLE_APPLICATION_CREDENTIALS": str(write(tmp_path, info))}).describe()
    assert "direct federated access (no service account impersonated)" in line
    assert not [s for s in secrets if s in line]


def test_gcloud_login_found_in_the_adc_file(tmp_path):
    info, secrets = authorized_user()
    adc = tmp_path / "gcloud" / "application_default_credentials.json"
    adc.parent.mkdir()
    adc.write_text(json.dumps(info))

    line = identity_for("gcs", {"CLOUDSDK_CONFIG": str(adc.parent)}).describe()

    assert line == f"authorized_user, account ada@example.com, quota project hokusai-dev, gcloud ADC file {adc}"
    assert not [s for s in secrets if s in line]


def test_impersonated_service_account_file(tmp_path):
    user, secrets = authorized_user()
    info = {
        "type": "impersonated_service_account",
        "service_account_impersonation_url": (
            "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/ci@p.iam.gserviceaccount.com"
            ":generateAccessToken"
        ),
        "source_credentials": user,
        "delegates": [],
    }
    line = identity_for("gcs", {"GOOGLE_APPLICATION_CREDENTIALS": str(write(tmp_path, info))}).describe()
    assert "impersonating ci@p.iam.gserviceaccount.com with authorized_user credentials" in line
    assert not [s for s in secrets if s in line]


@pytest.mark.parametrize(("client", "variable"), [("gcs", "STORAGE_EMULATOR_HOST"), ("pubsub", "PUBSUB_EMULATOR_HOST")])
def test_an_emulator_means_no_credentials_even_with_a_file(tmp_path, client, variable):
    info, _ = service_account()
    environ = {variable: "127.0.0.1:8085", "GOOGLE_APPLICATION_CREDENTIALS": str(write(tmp_path, info))}
    assert identity_for(client, environ).describe() == f"emulator at 127.0.0.1:8085 ({variable}), no credentials"


def test_no_file_anywhere_means_the_metadata_server_unprobed(tmp_path):
    line = identity_for("gcs", {"HOME": str(tmp_path), "CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE": "/x.json"}).describe()
    assert "metadata server" in line and "not probed" in line
    assert "CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE is set but only gcloud reads it" in line


def test_a_named_file_that_is_missing_is_bad_settings(tmp_path):
    with pytest.raises(InputError) as caught:
        identity_for("gcs", {"GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "gha-creds-gone.json")})
    assert caught.value.exit_code == 2
    assert "gha-creds-gone.json, which does not exist" in caught.value.one_line()
    assert "In a Docker action the file must be inside the workspace" in caught.value.one_line()


@pytest.mark.parametrize(
    "content",
    [
        "not json " + "-----BEGIN PRIVATE KEY-----",
        json.dumps({"private_key": "-----BEGIN PRIVATE KEY-----"}),
        json.dumps({"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----"}),
        json.dumps({"type": "mystery", "private_key": "-----BEGIN PRIVATE KEY-----"}),
    ],
    ids=["not-json", "no-type", "no-email", "unknown-type"],
)
def test_a_file_that_is_not_credentials_is_named_without_its_content(tmp_path, content):
    path = tmp_path / "creds.json"
    path.write_text(content)
    with pytest.raises(InputError) as caught:
        identity_for("gcs", {"GOOGLE_APPLICATION_CREDENTIALS": str(path)})
    line = caught.value.one_line()
    assert "is not a Google credentials file" in line and str(path) in line
    assert "PRIVATE KEY" not in line
