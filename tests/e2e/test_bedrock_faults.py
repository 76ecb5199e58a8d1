"""Bedrock under faults, with a proxy in front of moto: S3 failing mid-upload, a create whose
answer is lost or slow, a crash between Bedrock's answer and the registry's commit. Whatever
happens, one Bedrock job per gateway job, no orphaned multipart parts, and a clear status."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.conftest import start_gateway
from tests.e2e.bedrock import (
    AWS_HEADERS,
    BUCKET,
    JOB_ROLE,
    SECRET,
    BedrockStack,
    bedrock_routing,
    moto_url,  # noqa: F401  (fixture)
    tagged_jobs,
)
from tests.e2e.crash import crash_after_create_then_reconcile
from tests.e2e.test_jobs_bedrock import TENANT, chat_line, create_settled, jsonl, settled, upload
from tests.fakes.aws_proxy import AwsProxy, start_aws_proxy_in_thread


@pytest.fixture(scope="module")
def proxy(moto_url: str) -> Iterator[AwsProxy]:  # noqa: F811
    fake = start_aws_proxy_in_thread(moto_url)
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def stack(proxy: AwsProxy, moto_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BedrockStack]:  # noqa: F811
    os.environ["TG_TEST_AWS_SECRET"] = SECRET
    gateway = start_gateway(
        tmp_path_factory.mktemp("bedrock-faults"),
        routing=bedrock_routing(proxy.url),
        reconcile_grace_seconds=0.0,
    )
    yield BedrockStack(gateway=gateway, moto_url=moto_url)
    gateway.close()


def test_s3_failing_mid_upload_aborts_it_and_fails_the_job(stack: BedrockStack, proxy: AwsProxy) -> None:
    sdk = openai.OpenAI(
        base_url=stack.gateway.base_url,
        api_key="x",
        default_headers={**TENANT, **AWS_HEADERS, "x-portkey-aws-s3-object-key": "midway"},
        max_retries=0,
    )
    filler = "y" * 4000
    data = jsonl(
        [
            {
                "messages": [
                    {"role": "user", "content": f"{i} {filler}"},
                    {"role": "assistant", "content": "ok"},
                ]
            }
            for i in range(3000)
        ]
    )
    file_id = upload(sdk, data)
    # Every part upload fails (botocore retries each, then gives up); the multipart upload itself
    # was created, so it must be aborted.
    fault = proxy.inject("500", rf"/{BUCKET}/midway/.*", method="PUT", times=1000)
    try:
        job = create_settled(sdk, file_id, "amazon.titan-text-express-v1")
    finally:
        proxy.call(lambda: proxy.faults.remove(fault) if fault in proxy.faults else None)
    assert job.status == "failed"
    assert job.error is not None and "midway" in job.error.message
    s3 = stack.s3()
    assert any(r.method == "POST" and "midway" in r.path for r in proxy.requests)  # CreateMultipartUpload
    assert not s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads")
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix="midway/").get("KeyCount") == 0
    assert stack.job_for(job.id) is None


def test_a_missing_bucket_fails_the_job_naming_the_header(stack: BedrockStack) -> None:
    sdk = openai.OpenAI(
        base_url=stack.gateway.base_url,
        api_key="x",
        default_headers={**TENANT, **AWS_HEADERS, "x-portkey-aws-s3-bucket": "no-such-bucket-here"},
        max_retries=0,
    )
    file_id = upload(sdk, jsonl([chat_line(0)]))
    job = create_settled(sdk, file_id, "amazon.nova-micro-v1:0")
    assert job.status == "failed" and job.error is not None
    assert job.error.param == "x-portkey-aws-s3-bucket" and "NoSuchBucket" in job.error.message


def test_sdk_retry_after_a_timeout_makes_one_bedrock_job(stack: BedrockStack, proxy: AwsProxy) -> None:
    """Training data already in S3 (an s3:// URI): the create is synchronous, Bedrock is slow, the
    SDK times out and retries with its own Idempotency-Key; one Bedrock job, one gateway job."""
    s3 = stack.s3()
    s3.put_object(Bucket=BUCKET, Key="ready/train.jsonl", Body=b'{"prompt": "a", "completion": "b"}\n')
    proxy.inject("slow", "/model-customization-jobs", method="POST", delay=2.5)
    sdk = openai.OpenAI(
        base_url=stack.gateway.base_url,
        api_key="x",
        default_headers={**TENANT, **AWS_HEADERS},
        timeout=1.0,
        max_retries=4,
    )
    before = len(stack.jobs())
    job = sdk.fine_tuning.jobs.create(
        model="amazon.titan-text-express-v1",
        training_file=f"s3://{BUCKET}/ready/train.jsonl",
        extra_body={"role_arn": JOB_ROLE},
    )
    job = settled(sdk, job.id)
    assert job.status == "running" and job.training_file == f"s3://{BUCKET}/ready/train.jsonl"
    assert len(stack.jobs()) == before + 1
    assert stack.job_for(job.id) is not None


def test_a_lost_create_answer_is_found_by_tag(stack: BedrockStack, proxy: AwsProxy) -> None:
    """Bedrock creates the job but the answer never arrives: the gateway finds it by its name and
    tag instead of creating another."""
    sdk = openai.OpenAI(
        base_url=stack.gateway.base_url, api_key="x", default_headers={**TENANT, **AWS_HEADERS}, max_retries=0
    )
    file_id = upload(sdk, jsonl([chat_line(1)]))
    proxy.inject("drop_after_create", "/model-customization-jobs", method="POST")
    job = create_settled(sdk, file_id, "amazon.nova-micro-v1:0")
    assert job.status == "running"
    assert len(tagged_jobs(job.id)) == 1  # (other tests' background creates may land meanwhile)


def test_crash_between_bedrock_and_the_commit(
    tmp_path: Path,
    moto_url: str,  # noqa: F811
) -> None:
    crash_after_create_then_reconcile(
        tmp_path,
        f"""
[providers.bedrock]
base_url = "{moto_url}"
options = {{ upload_part_size_mib = "5" }}

[virtual_keys.aws-team]
provider = "bedrock"
region = "us-east-1"
api_key_env = "TG_TEST_AWS_SECRET"
aws_access_key_id = "AKIAIOSFODNN7EXAMPLE"
s3_bucket = "{BUCKET}"
job_role_arn = "{JOB_ROLE}"
""",
        env={"TG_TEST_AWS_SECRET": SECRET},
        headers={**TENANT, "x-portkey-virtual-key": "aws-team", "authorization": "Bearer x"},
        model="amazon.nova-micro-v1:0",
        training=jsonl([chat_line(2)]),
        reconciled_status="running",
        jobs_at_provider=lambda gateway_id: len(tagged_jobs(gateway_id)),
    )
