"""Bedrock routing: Portkey's AWS headers, config and body spellings, virtual keys → `Account`."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tunegate.server.errors import InvalidArgument
from tunegate.server.routing import (
    DEFAULT_PROVIDERS,
    ProviderSettings,
    Router,
    RoutingConfig,
    VirtualKey,
    decode_aws_secret,
)

KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
TOKEN = "FwoGZXIvYXdzEXAMPLETOKEN//////////wEaDA=="
ROLE = "arn:aws:iam::123456789012:role/tunegate-caller"
JOB_ROLE = "arn:aws:iam::123456789012:role/bedrock-jobs"
BEDROCK = {
    "x-portkey-provider": "bedrock",
    "x-portkey-aws-access-key-id": KEY_ID,
    "x-portkey-aws-secret-access-key": SECRET,
    "x-portkey-aws-region": "us-east-1",
    "authorization": "Bearer placeholder-from-the-openai-sdk",
}
CONFIG = RoutingConfig(
    allowed_custom_hosts=("127.0.0.1",),
    virtual_keys={
        "aws-team": VirtualKey(
            name="aws-team",
            provider="bedrock",
            api_key_env="TEAM_AWS_SECRET",
            region="eu-west-1",
            options={"aws_access_key_id": KEY_ID, "s3_bucket": "team-data", "job_role_arn": JOB_ROLE},
        ),
        "aws-instance": VirtualKey(
            name="aws-instance", provider="bedrock", api_key_env=None, region="us-west-2"
        ),
    },
    providers={
        **DEFAULT_PROVIDERS,
        "bedrock": ProviderSettings(
            base_url="https://bedrock.{region}.amazonaws.com",
            options={"s3_object_key": "tunegate/", "upload_part_size_mib": "16"},
        ),
    },
)
ENV = {"TEAM_AWS_SECRET": SECRET}


def router() -> Router:
    return Router(CONFIG, env=ENV)


def test_headers_make_an_aws_account() -> None:
    account = router().resolve(
        {
            **BEDROCK,
            "x-portkey-aws-session-token": TOKEN,
            "x-portkey-aws-s3-bucket": "my-training-data",
            "x-portkey-aws-s3-object-key": "jobs/run-1",
            "x-portkey-amz-server-side-encryption": "aws:kms",
            "x-portkey-amz-server-side-encryption-aws-kms-key-id": "alias/training",
            "x-portkey-aws-bedrock-model": "amazon.nova-micro-v1:0:128k",
        }
    )
    assert account is not None
    assert account.provider == "bedrock"
    assert account.region == "us-east-1"
    assert account.base_url == "https://bedrock.us-east-1.amazonaws.com"
    # The OpenAI SDK's placeholder bearer is not the credential; the AWS secret (and token) is.
    assert decode_aws_secret(account.credential) == (SECRET, TOKEN)
    assert SECRET not in repr(account) and TOKEN not in repr(account)
    assert account.options == {
        "aws_access_key_id": KEY_ID,
        "s3_bucket": "my-training-data",
        "s3_object_key": "jobs/run-1",
        "server_side_encryption": "aws:kms",
        "kms_key_id": "alias/training",
        "bedrock_model": "amazon.nova-micro-v1:0:128k",
        "upload_part_size_mib": "16",
    }


def test_call_settings_do_not_change_the_account_key() -> None:
    plain = router().resolve(BEDROCK)
    with_bucket = router().resolve({**BEDROCK, "x-portkey-aws-s3-bucket": "other-bucket"})
    other_secret = router().resolve({**BEDROCK, "x-portkey-aws-secret-access-key": "different"})
    assert plain is not None and with_bucket is not None and other_secret is not None
    assert plain.key == with_bucket.key
    assert plain.key != other_secret.key
    assert plain.options["s3_object_key"] == "tunegate/"  # the configured default


def test_assumed_role() -> None:
    account = router().resolve(
        {
            **BEDROCK,
            "x-portkey-aws-auth-type": "assumedRole",
            "x-portkey-aws-role-arn": ROLE,
            "x-portkey-aws-external-id": "ext-123",
        }
    )
    assert account is not None
    assert account.options["auth_type"] == "assumedRole"
    assert account.options["aws_role_arn"] == ROLE
    assert account.options["external_id"] == "ext-123"


def test_config_and_body_spellings() -> None:
    config = json.dumps(
        {
            "provider": "bedrock",
            "awsAccessKeyId": KEY_ID,
            "awsSecretAccessKey": SECRET,
            "awsRegion": "us-east-1",
            "awsS3Bucket": "cfg-bucket",
            "amzServerSideEncryptionKMSKeyId": "alias/k",
        }
    )
    account = router().resolve({"x-portkey-config": config})
    assert account is not None
    assert decode_aws_secret(account.credential) == (SECRET, None)
    assert account.options["s3_bucket"] == "cfg-bucket"
    assert account.options["kms_key_id"] == "alias/k"
    body = {
        "provider": "bedrock",
        "aws_access_key_id": KEY_ID,
        "aws_secret_access_key": SECRET,
        "aws_region": "us-east-1",
        "aws_s3_bucket": "body-bucket",
        "model": "amazon.titan-text-lite-v1:0:4k",  # not routing: the adapter reads it
        "role_arn": JOB_ROLE,  # the job's role, not the gateway's: not routing either
    }
    account = router().resolve({}, body)
    assert account is not None
    assert account.options["s3_bucket"] == "body-bucket"
    assert "aws_role_arn" not in account.options


@pytest.mark.parametrize(
    ("headers", "code", "param"),
    [
        (
            {**BEDROCK, "x-portkey-aws-secret-access-key": ""},
            "missing_credentials",
            "x-portkey-aws-secret-access-key",
        ),
        (
            {**BEDROCK, "x-portkey-aws-access-key-id": ""},
            "missing_credentials",
            "x-portkey-aws-access-key-id",
        ),
        (
            {"x-portkey-provider": "bedrock", "x-portkey-aws-region": "us-east-1"},
            "missing_credentials",
            "x-portkey-aws-access-key-id",
        ),
        ({**BEDROCK, "x-portkey-aws-region": ""}, "missing_provider_option", "x-portkey-aws-region"),
        (
            {**BEDROCK, "x-portkey-aws-region": "us-east-1.evil.com/#"},
            "invalid_provider_option",
            "x-portkey-aws-region",
        ),
        (
            {**BEDROCK, "x-portkey-aws-s3-bucket": "Bad_Bucket"},
            "invalid_provider_option",
            "x-portkey-aws-s3-bucket",
        ),
        (
            {**BEDROCK, "x-portkey-aws-s3-object-key": "a b"},
            "invalid_provider_option",
            "x-portkey-aws-s3-object-key",
        ),
        (
            {**BEDROCK, "x-portkey-aws-role-arn": "not-an-arn"},
            "invalid_provider_option",
            "x-portkey-aws-role-arn",
        ),
        (
            {**BEDROCK, "x-portkey-amz-server-side-encryption": "rot13"},
            "invalid_provider_option",
            "x-portkey-amz-server-side-encryption",
        ),
        (
            {**BEDROCK, "x-portkey-aws-auth-type": "assumedRole"},
            "missing_provider_option",
            "x-portkey-aws-role-arn",
        ),
        (
            {
                "x-portkey-provider": "openai",
                "authorization": "Bearer sk-1",
                "x-portkey-aws-s3-bucket": "b-1",
            },
            "conflicting_route",
            "x-portkey-aws-s3-bucket",
        ),
    ],
)
def test_bad_routes(headers: dict[str, str], code: str, param: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        router().resolve(headers)
    assert (caught.value.code, caught.value.param) == (code, param)
    assert SECRET not in caught.value.message


def test_virtual_key_with_per_call_settings() -> None:
    account = router().resolve({"x-portkey-virtual-key": "aws-team", "x-portkey-aws-s3-object-key": "run-2/"})
    assert account is not None
    assert account.key == "vk:aws-team"
    assert account.region == "eu-west-1"
    assert decode_aws_secret(account.credential) == (SECRET, None)
    assert account.options["s3_bucket"] == "team-data"
    assert account.options["s3_object_key"] == "run-2/"  # added by the call
    assert account.options["job_role_arn"] == JOB_ROLE
    rebuilt = router().account_for("vk:aws-team")
    assert rebuilt is not None and rebuilt.options["s3_object_key"] == "tunegate/"  # config default
    with pytest.raises(InvalidArgument) as caught:
        router().resolve({"x-portkey-virtual-key": "aws-team", "x-portkey-aws-s3-bucket": "elsewhere"})
    assert (caught.value.code, caught.value.param) == ("conflicting_route", "x-portkey-aws-s3-bucket")
    with pytest.raises(InvalidArgument) as caught:
        router().resolve({"x-portkey-virtual-key": "aws-team", "x-portkey-aws-secret-access-key": "x"})
    assert caught.value.code == "conflicting_route"


def test_virtual_key_on_the_default_chain() -> None:
    account = router().resolve({"x-portkey-virtual-key": "aws-instance"})
    assert account is not None
    assert account.credential == ""  # botocore's default credential chain
    assert account.base_url == "https://bedrock.us-west-2.amazonaws.com"


def test_custom_host_serves_every_aws_service() -> None:
    account = router().resolve({**BEDROCK, "x-portkey-custom-host": "http://127.0.0.1:5000"})
    assert account is not None and account.base_url == "http://127.0.0.1:5000"


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: VirtualKey(name="k", provider="bedrock", api_key_env="A"), "aws_access_key_id"),
        (
            lambda: ProviderSettings(
                base_url="https://x", options={"upload_part_size_mib": "4"}
            ).check_options("bedrock"),
            "upload_part_size_mib",
        ),
        (
            lambda: ProviderSettings(base_url="https://x", options={"s3_bucket": "b"}).check_options(
                "openai"
            ),
            "no options",
        ),
        (
            lambda: ProviderSettings(base_url="https://x", options={"colour": "b"}).check_options("bedrock"),
            "unknown",
        ),
        (
            lambda: ProviderSettings(
                base_url="https://x", options={"upload_multipart_limit_bytes": "150000001"}
            ).check_options("fireworks-ai"),
            "upload_multipart_limit_bytes",
        ),
        (
            lambda: ProviderSettings(base_url="https://x", options={"s3_bucket": "b"}).check_options(
                "fireworks-ai"
            ),
            "unknown",
        ),
    ],
)
def test_bad_configuration(build: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_fireworks_takes_its_multipart_limit() -> None:
    settings = ProviderSettings(base_url="https://x", options={"upload_multipart_limit_bytes": "0"})
    settings.check_options("fireworks-ai")
    assert settings.options["upload_multipart_limit_bytes"] == "0"
