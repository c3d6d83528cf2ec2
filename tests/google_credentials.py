"""Google credential files of each type, as users have them (fake keys, random secrets): each
factory returns the file's JSON and the secrets in it that must never be printed."""

from __future__ import annotations

import base64
import os

GITHUB_OIDC_URL = (
    "https://pipelines.actions.githubusercontent.com/abc123/idtoken/run/1?api-version=2.0"
    "&audience=%2F%2Fiam.googleapis.com%2Fprojects%2F123%2Flocations%2Fglobal%2FworkloadIdentityPools%2Fgh"
)
WIF_AUDIENCE = "//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/gh/providers/github"


def secret(label: str) -> str:
    return f"{label}-{base64.b32encode(os.urandom(15)).decode().lower()}"


def fake_private_key() -> str:
    body = base64.encodebytes(os.urandom(600)).decode()
    return f"-----BEGIN PRIVATE KEY-----\n{body}-----END PRIVATE KEY-----\n"


def service_account() -> tuple[dict, list[str]]:
    key, key_id = fake_private_key(), secret("keyid")
    info = {
        "type": "service_account",
        "project_id": "hokusai-prod",
        "private_key_id": key_id,
        "private_key": key,
        "client_email": "registrar@hokusai-prod.iam.gserviceaccount.com",
        "client_id": "104242424242424242424",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    return info, [key_id, key.splitlines()[1]]


def github_wif(*, impersonate: bool = True) -> tuple[dict, list[str]]:
    """The shape google-github-actions/auth writes (gha-creds-*.json): a bearer token in the headers."""
    runner_token = secret("runner-bearer")
    info = {
        "type": "external_account",
        "audience": WIF_AUDIENCE,
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "token_url": "https://sts.googleapis.com/v1/token",
        "credential_source": {
            "url": GITHUB_OIDC_URL,
            "headers": {"Authorization": f"Bearer {runner_token}"},
            "format": {"type": "json", "subject_token_field_name": "value"},
        },
    }
    if impersonate:
        info["service_account_impersonation_url"] = (
            "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/"
            "deployer@hokusai-prod.iam.gserviceaccount.com:generateAccessToken"
        )
    return info, [runner_token, "abc123/idtoken"]


def authorized_user() -> tuple[dict, list[str]]:
    client_secret, refresh = secret("client-secret"), secret("refresh")
    info = {
        "type": "authorized_user",
        "client_id": "764086051850-6qr4p6gpi6hn506pt8ejuq83di341hur.apps.googleusercontent.com",
        "client_secret": client_secret,
        "refresh_token": refresh,
        "account": "ada@example.com",
        "quota_project_id": "hokusai-dev",
    }
    return info, [client_secret, refresh]
