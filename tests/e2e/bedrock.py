"""A gateway whose AWS is moto's server on loopback (S3, STS and Bedrock's model-customization
jobs — an implementation nobody here wrote), for the Bedrock end-to-end tests.

moto runs in this process (`ThreadedMotoServer`), so a test can also reach into its backends to
do what moto does not emulate: move a job's status on, or write the metrics files Bedrock would.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3  # type: ignore[import-untyped]
import pytest
from moto.backends import get_backend
from moto.server import ThreadedMotoServer
from tunegate.server.routing import DEFAULT_PROVIDERS, ProviderSettings, RoutingConfig, VirtualKey

from tests.conftest import Gateway, start_gateway

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
BUCKET = "tunegate-training"
JOB_ROLE = f"arn:aws:iam::{ACCOUNT}:role/bedrock-customization"
KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"

AWS_HEADERS = {
    "x-portkey-provider": "bedrock",
    "x-portkey-aws-access-key-id": KEY_ID,
    "x-portkey-aws-secret-access-key": SECRET,
    "x-portkey-aws-region": REGION,
    "x-portkey-aws-s3-bucket": BUCKET,
}


@dataclass
class BedrockStack:
    gateway: Gateway
    moto_url: str

    def s3(self) -> Any:
        return boto3.client(
            "s3",
            region_name=REGION,
            endpoint_url=self.moto_url,
            aws_access_key_id=KEY_ID,
            aws_secret_access_key=SECRET,
        )

    def jobs(self) -> dict[str, Any]:
        """moto's model-customization jobs, by job name."""
        backend = get_backend("bedrock")[ACCOUNT][REGION]
        jobs: dict[str, Any] = backend.model_customization_jobs
        return jobs

    def job_for(self, gateway_id: str) -> Any:
        found = tagged_jobs(gateway_id)
        assert len(found) <= 1, found
        return found[0] if found else None


def tagged_jobs(gateway_id: str) -> list[Any]:
    """moto's jobs tagged with a gateway job id."""
    backend = get_backend("bedrock")[ACCOUNT][REGION]
    tag = {"key": "tunegate_job_id", "value": gateway_id}
    return [j for j in backend.model_customization_jobs.values() if tag in (j.job_tags or [])]


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    client = boto3.client(
        "s3", region_name=REGION, endpoint_url=url, aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET
    )
    client.create_bucket(Bucket=BUCKET)
    yield url
    server.stop()


def bedrock_routing(moto_url: str, **options: str) -> RoutingConfig:
    providers = dict(DEFAULT_PROVIDERS)
    providers["bedrock"] = ProviderSettings(
        base_url=moto_url, timeout_seconds=10.0, options={"upload_part_size_mib": "5", **options}
    )
    return RoutingConfig(
        providers=providers,
        allowed_custom_hosts=("127.0.0.1",),
        virtual_keys={
            "aws-team": VirtualKey(
                name="aws-team",
                provider="bedrock",
                api_key_env="TG_TEST_AWS_SECRET",
                region=REGION,
                options={"aws_access_key_id": KEY_ID, "s3_bucket": BUCKET, "job_role_arn": JOB_ROLE},
            )
        },
    )


@pytest.fixture(scope="module")
def bedrock(moto_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BedrockStack]:
    import os

    os.environ["TG_TEST_AWS_SECRET"] = SECRET
    gateway = start_gateway(
        tmp_path_factory.mktemp("bedrock"), routing=bedrock_routing(moto_url), reconcile_grace_seconds=0.0
    )
    yield BedrockStack(gateway=gateway, moto_url=moto_url)
    gateway.close()


def wait_for(check: Callable[[], Any], *, timeout: float = 30.0, what: str = "condition") -> Any:
    """Polls `check` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
