"""Vertex AI routing: Portkey's Vertex headers, a key file or a bearer token, config spellings."""

from __future__ import annotations

import json

import pytest
from tunegate.server.errors import InvalidArgument
from tunegate.server.routing import DEFAULT_PROVIDERS, ProviderSettings, Router, RoutingConfig, VirtualKey

KEY_FILE = json.dumps(
    {
        "type": "service_account",
        "project_id": "tuning-project-1",
        "private_key_id": "k1",
        "private_key": "-----BEGIN PRIVATE KEY-----\nMIIE-secret\n-----END PRIVATE KEY-----\n",
        "client_email": "tuner@tuning-project-1.iam.gserviceaccount.com",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
)
VERTEX = {
    "x-portkey-provider": "vertex-ai",
    "x-portkey-vertex-region": "us-central1",
    "x-portkey-vertex-service-account-json": KEY_FILE,
    "x-portkey-vertex-storage-bucket-name": "tuning-data",
    "authorization": "Bearer placeholder",
}
CONFIG = RoutingConfig(
    allowed_custom_hosts=("127.0.0.1",),
    providers={
        **DEFAULT_PROVIDERS,
        "vertex-ai": ProviderSettings(base_url="https://{region}-aiplatform.googleapis.com"),
    },
    virtual_keys={
        "gcp-team": VirtualKey(
            name="gcp-team",
            provider="vertex-ai",
            api_key_env="GCP_KEY_FILE",
            region="europe-west4",
            options={"project_id": "team-project", "storage_bucket": "team-bucket"},
        )
    },
)


def router() -> Router:
    return Router(CONFIG, env={"GCP_KEY_FILE": KEY_FILE})


def test_key_file_gives_credential_and_project() -> None:
    account = router().resolve(VERTEX)
    assert account is not None
    assert account.provider == "vertex-ai"
    assert account.credential == KEY_FILE and "PRIVATE" not in repr(account)
    assert account.base_url == "https://us-central1-aiplatform.googleapis.com"
    assert account.options == {
        "project_id": "tuning-project-1",
        "auth": "service_account",
        "storage_bucket": "tuning-data",
    }
    other_bucket = router().resolve({**VERTEX, "x-portkey-vertex-storage-bucket-name": "elsewhere"})
    assert other_bucket is not None and other_bucket.key == account.key


def test_bearer_token_needs_a_project() -> None:
    headers = {
        "x-portkey-provider": "google-vertex-ai",
        "x-portkey-vertex-region": "global",
        "authorization": "Bearer ya29.token",
    }
    with pytest.raises(InvalidArgument) as caught:
        router().resolve(headers)
    assert (caught.value.code, caught.value.param) == (
        "missing_provider_option",
        "x-portkey-vertex-project-id",
    )
    account = router().resolve({**headers, "x-portkey-vertex-project-id": "p-123456"})
    assert account is not None
    assert account.credential == "ya29.token" and account.options["auth"] == "bearer"
    assert account.base_url == "https://aiplatform.googleapis.com"  # the global location's host


@pytest.mark.parametrize(
    ("headers", "code", "param"),
    [
        (
            {**VERTEX, "x-portkey-vertex-service-account-json": "{not json"},
            "invalid_service_account",
            "x-portkey-vertex-service-account-json",
        ),
        (
            {**VERTEX, "x-portkey-vertex-service-account-json": "[1, 2]"},
            "invalid_service_account",
            "x-portkey-vertex-service-account-json",
        ),
        (
            {**VERTEX, "x-portkey-vertex-region": "us-central1.evil.com/#"},
            "invalid_provider_option",
            "x-portkey-vertex-region",
        ),
        (
            {**VERTEX, "x-portkey-vertex-storage-bucket-name": "a/b"},
            "invalid_provider_option",
            "x-portkey-vertex-storage-bucket-name",
        ),
        (
            {**VERTEX, "x-portkey-vertex-project-id": "p@evil.com"},
            "invalid_provider_option",
            "x-portkey-vertex-project-id",
        ),
        ({**VERTEX, "x-portkey-vertex-region": ""}, "missing_provider_option", "x-portkey-vertex-region"),
    ],
)
def test_bad_routes(headers: dict[str, str], code: str, param: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        router().resolve(headers)
    assert (caught.value.code, caught.value.param) == (code, param)
    assert "MIIE-secret" not in caught.value.message


def test_config_object_and_virtual_key() -> None:
    config = {
        "provider": "vertex-ai",
        "vertexRegion": "us-central1",
        "vertexServiceAccountJson": json.loads(KEY_FILE),  # Portkey's config holds an object
        "vertexStorageBucketName": "cfg-bucket",
    }
    account = router().resolve({"x-portkey-config": json.dumps(config)})
    assert account is not None and account.options["storage_bucket"] == "cfg-bucket"
    assert json.loads(account.credential) == json.loads(KEY_FILE)
    vk = router().resolve({"x-portkey-virtual-key": "gcp-team"})
    assert vk is not None and vk.key == "vk:gcp-team"
    assert vk.options["auth"] == "service_account" and vk.options["project_id"] == "team-project"
    assert vk.base_url == "https://europe-west4-aiplatform.googleapis.com"
