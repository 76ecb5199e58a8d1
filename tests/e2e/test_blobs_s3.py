"""The gateway with `[blobs] url = "s3://..."` on moto's S3 server: the official `openai` SDK
stores files and uploads in the bucket, reads them back, and deletes them from it."""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
import openai
import pytest
from moto.server import ThreadedMotoServer
from tunegate.server.blobs import MIN_PART_BYTES, BlobSettings

from tests.conftest import Gateway, start_gateway
from tests.e2e.sdk import openai_client

PREFIX = "gateway/blobs"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with pytest.MonkeyPatch.context() as patch:  # botocore's default chain reads these
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch.delenv("AWS_SESSION_TOKEN", raising=False)
        patch.delenv("AWS_PROFILE", raising=False)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()


@pytest.fixture(scope="module")
def s3(moto_url: str) -> Any:
    return boto3.client("s3", region_name="us-east-1", endpoint_url=moto_url)


@pytest.fixture(scope="module")
def bucket(s3: Any) -> str:
    name = f"tunegate-{secrets.token_hex(4)}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="module", params=["grpc", "in-process"])
def gateway(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, moto_url: str, bucket: str
) -> Iterator[Gateway]:
    blobs = BlobSettings(
        url=f"s3://{bucket}/{PREFIX}", endpoint_url=moto_url, region="us-east-1", part_bytes=MIN_PART_BYTES
    )
    gw = start_gateway(
        tmp_path_factory.mktemp("s3-gateway"), in_process=request.param == "in-process", blobs=blobs
    )
    yield gw
    gw.close()


@pytest.fixture
def client(gateway: Gateway, api_key: str) -> openai.OpenAI:
    return openai_client(gateway.base_url, api_key, max_retries=0)


def _objects(s3: Any, bucket: str) -> list[str]:
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=f"{PREFIX}/")
    return sorted(item["Key"] for item in listing.get("Contents", []))


def _local_blobs(gateway: Gateway) -> list[Path]:
    return [path for path in gateway.stored_files() if path.parent.name in ("blobs", "tmp")]


def test_a_file_lives_in_the_bucket(client: openai.OpenAI, gateway: Gateway, s3: Any, bucket: str) -> None:
    payload = os.urandom(MIN_PART_BYTES) + b"tail" * 100_000  # more than one S3 part
    before = _objects(s3, bucket)
    file = client.files.create(file=("train.jsonl", payload), purpose="fine-tune")
    added = sorted(set(_objects(s3, bucket)) - set(before))
    assert len(added) == 1
    assert s3.head_object(Bucket=bucket, Key=added[0])["ContentLength"] == len(payload)
    assert client.files.content(file.id).read() == payload
    assert _local_blobs(gateway) == []  # nothing on the gateway's disk
    client.files.delete(file.id)
    assert _objects(s3, bucket) == before
    with pytest.raises(openai.NotFoundError):
        client.files.content(file.id)


def test_uploads_with_parts_assemble_in_the_bucket(
    client: openai.OpenAI, gateway: Gateway, s3: Any, bucket: str, tmp_path: Path
) -> None:
    before = _objects(s3, bucket)
    payload = os.urandom(3 * 1024 * 1024) * 3  # 9 MiB, in 2 MiB upload parts
    path = tmp_path / "big.jsonl"
    path.write_bytes(payload)
    upload = client.uploads.upload_file_chunked(
        file=path,
        mime_type="text/jsonl",
        purpose="fine-tune",
        part_size=2 * 1024 * 1024,
        md5=hashlib.md5(payload).hexdigest(),
    )
    assert upload.status == "completed" and upload.file is not None
    assert client.files.content(upload.file.id).read() == payload
    added = sorted(set(_objects(s3, bucket)) - set(before))
    assert len(added) == 1  # the parts' blobs are gone, the assembled file remains
    assert s3.head_object(Bucket=bucket, Key=added[0])["ContentLength"] == len(payload)
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    client.files.delete(upload.file.id)
    assert _objects(s3, bucket) == before


def test_a_cancelled_upload_removes_its_parts_from_the_bucket(
    client: openai.OpenAI, s3: Any, bucket: str
) -> None:
    before = _objects(s3, bucket)
    upload = client.uploads.create(bytes=6, filename="x.jsonl", mime_type="text/jsonl", purpose="fine-tune")
    client.uploads.parts.create(upload.id, data=b"abc")
    assert len(_objects(s3, bucket)) == len(before) + 1
    assert client.uploads.cancel(upload.id).status == "cancelled"
    assert _objects(s3, bucket) == before
