"""Owner scope rules (`tunegate.server.owner`)."""

from __future__ import annotations

import hashlib

import pytest
from tunegate.server.errors import InvalidArgument
from tunegate.server.owner import (
    DEFAULT_OWNER,
    credential_from_authorization,
    owner_from_metadata,
    owner_from_tenant_key,
    owner_from_token,
)


def fingerprint(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()[:32]


KEY = "key:" + fingerprint("sk-1")
TENANT = "tenant:" + fingerprint("pk-1")


@pytest.mark.parametrize(
    ("metadata", "owner"),
    [
        ([("authorization", "Bearer sk-1")], KEY),  # the format existing rows carry
        ([("authorization", "bearer  sk-1 ")], KEY),
        ([("authorization", "sk-1")], KEY),  # a bare key, as some clients send it
        ([("api-key", "sk-1")], KEY),
        ([("authorization", "Bearer sk-1"), ("api-key", "other")], KEY),
        ([("authorization", "Basic dTpw")], DEFAULT_OWNER),
        ([("authorization", "Basic dTpw"), ("api-key", "sk-1")], KEY),
        ([("x-portkey-api-key", "pk-1")], TENANT),
        ([("x-portkey-api-key", "pk-1"), ("authorization", "Bearer sk-1")], TENANT),  # the tenant wins
        ([("x-portkey-api-key", ""), ("authorization", "Bearer sk-1")], KEY),  # Portkey's SDK default
        ([("x-portkey-api-key", "  "), ("x-portkey-provider", "openai")], DEFAULT_OWNER),
        ([("authorization", "Bearer sk-1"), ("authorization", "Bearer sk-2")], KEY),  # first wins
        ([], DEFAULT_OWNER),
        (None, DEFAULT_OWNER),
        # A Bedrock call: the AWS credential, not the OpenAI SDK's placeholder `authorization`.
        (
            [
                ("authorization", "Bearer sk-1"),
                ("x-portkey-aws-access-key-id", "AKIA1"),
                ("x-portkey-aws-secret-access-key", "s3cret"),
            ],
            "aws:" + fingerprint("AKIA1\ns3cret"),
        ),
        ([("x-portkey-api-key", "pk-1"), ("x-portkey-aws-secret-access-key", "s3cret")], TENANT),
        (
            [("authorization", "Bearer unused"), ("x-portkey-vertex-service-account-json", '{"k": 1}')],
            "gcp:" + fingerprint('{"k": 1}'),
        ),
    ],
)
def test_owner_from_metadata(metadata: list[tuple[str, str | bytes]] | None, owner: str) -> None:
    assert owner_from_metadata(metadata) == owner


@pytest.mark.parametrize(
    ("metadata", "param"),
    [
        ([("x-portkey-api-key", "pk-\u00e9")], "x-portkey-api-key"),
        ([("x-portkey-api-key", "pk-\u00e9"), ("authorization", "Bearer sk-X")], "x-portkey-api-key"),
        ([("authorization", "Bearer sk-\u00e9")], "authorization"),
        ([("api-key", "sk-\x01")], "api-key"),
        ([("x-portkey-virtual-key", "vk-\u00e9")], "x-portkey-virtual-key"),
        ([("x-portkey-aws-secret-access-key", "s\u00e9")], "x-portkey-aws-secret-access-key"),
        ([("x-portkey-api-key", b"pk-1"), ("authorization", "Bearer sk-1")], "x-portkey-api-key"),
        ([("authorization-bin", b"Bearer sk-1")], "authorization"),
        ([("x-portkey-vertex-service-account-json-bin", b"{}")], "x-portkey-vertex-service-account-json"),
    ],
)
def test_unreadable_credential_is_refused(metadata: list[tuple[str, str | bytes]], param: str) -> None:
    """Never the anonymous scope, never another credential's: an InvalidArgument naming the key."""
    with pytest.raises(InvalidArgument) as raised:
        owner_from_metadata(metadata)
    assert raised.value.param == param


def test_fingerprints_hide_secrets() -> None:
    assert owner_from_token("sk-1") == KEY and "sk-1" not in KEY and len(KEY) == 36
    assert owner_from_tenant_key("pk-1") == TENANT
    assert owner_from_tenant_key("sk-1").removeprefix("tenant:") == KEY.removeprefix("key:")


@pytest.mark.parametrize(
    ("value", "credential"),
    [
        ("Bearer sk-1", "sk-1"),
        ("BEARER sk-1", "sk-1"),
        ("sk-1", "sk-1"),
        ("Bearer ", None),  # an SDK with an empty key
        ("Bearer", None),
        ("Basic dTpw", None),
        ("", None),
        ("   ", None),
    ],
)
def test_credential_from_authorization(value: str, credential: str | None) -> None:
    assert credential_from_authorization(value) == credential
