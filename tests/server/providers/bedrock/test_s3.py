"""S3 streaming for the Bedrock provider, against moto's S3 and STS server on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from moto.server import ThreadedMotoServer
from tunegate.server.errors import InvalidArgument, TunegateError
from tunegate.server.providers.bedrock._s3 import (
    HEADER_BUCKET,
    HEADER_EXTERNAL_ID,
    HEADER_KEY,
    HEADER_KMS_KEY_ID,
    HEADER_REGION,
    HEADER_ROLE_ARN,
    HEADER_SSE,
    AwsCredentials,
    MiB,
    ServerSideEncryption,
    UploadStats,
    assume_role,
    s3_client,
    upload_stream,
    validate_bucket,
    validate_key,
    validate_region,
)

REGION = "us-east-1"
CREDS = AwsCredentials("AKIDTESTTESTTEST", "secret-test-key")
ROLE = "arn:aws:iam::123456789012:role/bedrock-tuning"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
async def s3(moto_url: str):
    async with s3_client(CREDS, region=REGION, endpoint_url=moto_url) as client:
        yield client


@pytest.fixture
async def bucket(s3) -> str:
    name = f"tunegate-{os.urandom(4).hex()}"
    await s3.create_bucket(Bucket=name)
    return name


def payload(size: int) -> bytes:
    """Deterministic, non-repeating at part boundaries (so a reordered part is caught)."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(counter.to_bytes(8, "big")).digest() * 64
        counter += 1
    return bytes(out[:size])


async def chunked(data: bytes, chunk: int = 256 * 1024) -> AsyncIterator[bytes]:
    for i in range(0, len(data), chunk):
        yield data[i : i + chunk]


async def read_back(s3, bucket: str, key: str) -> bytes:
    answer = await s3.get_object(Bucket=bucket, Key=key)
    async with answer["Body"] as body:
        data: bytes = await body.read()
    return data


async def open_uploads(s3, bucket: str) -> list[dict[str, Any]]:
    answer = await s3.list_multipart_uploads(Bucket=bucket)
    return list(answer.get("Uploads", []))


async def test_multipart_stream_reads_back_byte_identical(s3, bucket: str) -> None:
    data = payload(20 * MiB + 12345)
    stats = UploadStats()
    etag, size = await upload_stream(
        s3,
        bucket=bucket,
        key="train/file-abc.jsonl",
        chunks=chunked(data, 300_001),  # chunk edges never meet part edges
        part_size=5 * MiB,
        concurrency=2,
        stats=stats,
    )
    assert size == len(data)
    assert stats.multipart and stats.parts == 5
    assert etag.strip('"').endswith("-5")
    assert await read_back(s3, bucket, "train/file-abc.jsonl") == data
    head = await s3.head_object(Bucket=bucket, Key="train/file-abc.jsonl", PartNumber=1)
    assert head["ContentLength"] == 5 * MiB  # every part but the last is exactly part_size
    assert head["PartsCount"] == 5
    assert await open_uploads(s3, bucket) == []


async def test_stream_of_exactly_whole_parts(s3, bucket: str) -> None:
    data = payload(10 * MiB)
    stats = UploadStats()
    etag, size = await upload_stream(
        s3, bucket=bucket, key="whole.jsonl", chunks=chunked(data), part_size=5 * MiB, stats=stats
    )
    assert (size, stats.parts) == (len(data), 2)
    assert etag.strip('"').endswith("-2")
    assert await read_back(s3, bucket, "whole.jsonl") == data


@pytest.mark.parametrize("size", [0, 1, 5 * MiB - 1])
async def test_small_stream_is_one_put(s3, bucket: str, size: int) -> None:
    data = payload(size)
    stats = UploadStats()
    etag, written = await upload_stream(
        s3, bucket=bucket, key="small.jsonl", chunks=chunked(data), part_size=5 * MiB, stats=stats
    )
    assert written == size and not stats.multipart
    assert "-" not in etag
    assert await read_back(s3, bucket, "small.jsonl") == data


async def test_memory_stays_bounded(s3, bucket: str) -> None:
    data = payload(24 * MiB)
    for concurrency in (1, 2, 4):
        stats = UploadStats()
        await upload_stream(
            s3,
            bucket=bucket,
            key=f"bounded-{concurrency}.jsonl",
            chunks=chunked(data, 64 * 1024),
            part_size=5 * MiB,
            concurrency=concurrency,
            stats=stats,
        )
        assert stats.parts == 5
        # At most `concurrency` parts in flight plus the one being filled.
        assert 5 * MiB <= stats.max_buffered <= (concurrency + 1) * 5 * MiB
        assert stats.buffered == 0


class Boom(Exception):
    pass


async def test_failure_mid_stream_aborts_the_upload(s3, bucket: str) -> None:
    data = payload(20 * MiB)
    stats = UploadStats()
    seen_parts: list[int] = []

    async def breaks_after_two_parts() -> AsyncIterator[bytes]:
        async for chunk in chunked(data[: 11 * MiB]):
            yield chunk
        # Wait until S3 holds the two whole parts, then fail: they must not be left behind.
        for _ in range(200):
            (upload,) = await open_uploads(s3, bucket)
            parts = await s3.list_parts(Bucket=bucket, Key="broken.jsonl", UploadId=upload["UploadId"])
            seen_parts[:] = [p["PartNumber"] for p in parts.get("Parts", [])]
            if len(seen_parts) == 2:
                break
            await asyncio.sleep(0.05)
        raise Boom("the source broke")

    with pytest.raises(Boom):
        await upload_stream(
            s3,
            bucket=bucket,
            key="broken.jsonl",
            chunks=breaks_after_two_parts(),
            part_size=5 * MiB,
            stats=stats,
        )
    assert seen_parts == [1, 2]
    assert await open_uploads(s3, bucket) == []
    with pytest.raises(Exception, match="404"):
        await s3.head_object(Bucket=bucket, Key="broken.jsonl")


async def test_cancellation_aborts_the_upload(s3, bucket: str) -> None:
    gate = asyncio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        yield payload(6 * MiB)
        gate.set()
        await asyncio.Event().wait()  # never ends
        yield b""

    task = asyncio.create_task(
        upload_stream(s3, bucket=bucket, key="cancelled.jsonl", chunks=stalls(), part_size=5 * MiB)
    )
    await gate.wait()
    assert len(await open_uploads(s3, bucket)) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await open_uploads(s3, bucket) == []


async def test_sse_headers_on_multipart_and_put(s3, bucket: str) -> None:
    for size, key in ((12 * MiB, "kms-multi.jsonl"), (1000, "kms-small.jsonl")):
        sse = ServerSideEncryption.parse("aws:kms", "alias/tunegate-training")
        await upload_stream(
            s3, bucket=bucket, key=key, chunks=chunked(payload(size)), part_size=5 * MiB, sse=sse
        )
        head = await s3.head_object(Bucket=bucket, Key=key)
        assert head["ServerSideEncryption"] == "aws:kms"
        assert head["SSEKMSKeyId"] == "alias/tunegate-training"
    await upload_stream(
        s3,
        bucket=bucket,
        key="aes.jsonl",
        chunks=chunked(payload(6 * MiB)),
        part_size=5 * MiB,
        sse=ServerSideEncryption.parse("AES256"),
    )
    head = await s3.head_object(Bucket=bucket, Key="aes.jsonl")
    assert head["ServerSideEncryption"] == "AES256"


def test_sse_parsing() -> None:
    key_arn = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    assert ServerSideEncryption.parse(None, None) is None
    assert ServerSideEncryption.parse("", "") is None
    assert ServerSideEncryption.parse(None, "alias/k") == ServerSideEncryption("aws:kms", "alias/k")
    assert ServerSideEncryption.parse("aws:kms", key_arn) == ServerSideEncryption("aws:kms", key_arn)
    assert ServerSideEncryption("AES256").request_params() == {"ServerSideEncryption": "AES256"}
    assert ServerSideEncryption.parse("AES256") == ServerSideEncryption("AES256")
    key_arn = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    assert ServerSideEncryption("aws:kms", key_arn).request_params() == {
        "ServerSideEncryption": "aws:kms",
        "SSEKMSKeyId": key_arn,
    }
    for algorithm, key, param in [
        ("aws:kms:dsse", None, HEADER_SSE),
        ("aes256", None, HEADER_SSE),
        ("AES256", "alias/k", HEADER_KMS_KEY_ID),
        ("aws:kms", "alias/k?x=1", HEADER_KMS_KEY_ID),
        ("aws:kms", "https://evil.example/", HEADER_KMS_KEY_ID),
    ]:
        with pytest.raises(InvalidArgument) as info:
            ServerSideEncryption.parse(algorithm, key)
        assert info.value.param == param


@pytest.mark.parametrize(
    "region", ["us-east-1", "eu-central-1", "us-gov-west-1", "cn-north-1", "us-isob-east-1"]
)
def test_valid_regions(region: str) -> None:
    assert validate_region(region) == region


@pytest.mark.parametrize(
    "region",
    [
        "",
        "us-east-1.evil.com",
        "us-east-1#",
        "evil.com/",
        "US-EAST-1",
        "us-east",
        "us-east-1/x",
        "a@b",
        "us_east_1",
    ],
)
def test_invalid_regions(region: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        validate_region(region)
    assert info.value.param == HEADER_REGION
    assert HEADER_REGION in info.value.message


@pytest.mark.parametrize("name", ["abc", "my-bucket", "my.bucket.2", "a" * 63, "0bucket9"])
def test_valid_buckets(name: str) -> None:
    assert validate_bucket(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "ab",
        "a" * 64,
        "My-Bucket",
        "bucket_name",
        "-bucket",
        "bucket-",
        "bu..cket",
        "bu.-cket",
        "192.168.5.4",
        "xn--bucket",
        "sthree-bucket",
        "bucket-s3alias",
        "bucket--ol-s3",
        "evil.com#",
        "bucket/../x",
        "b@evil.com",
        "bucket?x",
    ],
)
def test_invalid_buckets(name: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        validate_bucket(name)
    assert info.value.param == HEADER_BUCKET


@pytest.mark.parametrize("key", ["a", "train/file-abc.jsonl", "x/y/z_(1)!*'.jsonl", "a" * 1024])
def test_valid_keys(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/abs",
        "a//b",
        "a/../b",
        "./a",
        "a/.",
        "a b",
        "a?b",
        "a#b",
        "a%2Fb",
        "a\\b",
        "é",
        "a" * 1025,
        "dir/",
    ],
)
def test_invalid_keys(key: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        validate_key(key)
    assert info.value.param == HEADER_KEY


def test_key_prefix_may_end_with_slash() -> None:
    assert validate_key("training/", prefix=True) == "training/"
    with pytest.raises(InvalidArgument):
        validate_key("/", prefix=True)


async def test_invalid_names_refused_before_any_request(moto_url: str) -> None:
    # An endpoint nothing listens on: reaching it would be a connection error, not InvalidArgument.
    async with s3_client(CREDS, region=REGION, endpoint_url="http://127.0.0.1:9") as dead:
        for bucket, key, param in [("Bad_Bucket", "k", HEADER_BUCKET), ("good-bucket", "a/../b", HEADER_KEY)]:
            with pytest.raises(InvalidArgument) as info:
                await upload_stream(dead, bucket=bucket, key=key, chunks=chunked(b"x"))
            assert info.value.param == param
    with pytest.raises(InvalidArgument) as info:
        async with s3_client(CREDS, region="us-east-1.evil.com#", endpoint_url=moto_url):
            pass
    assert info.value.param == HEADER_REGION


async def test_no_such_bucket_is_a_clear_error(s3) -> None:
    for size in (10, 6 * MiB):  # PutObject and CreateMultipartUpload
        with pytest.raises(InvalidArgument) as info:
            await upload_stream(
                s3, bucket="tunegate-missing", key="k.jsonl", chunks=chunked(payload(size)), part_size=5 * MiB
            )
        assert info.value.param == HEADER_BUCKET
        assert info.value.code == "no_such_bucket"
        assert "tunegate-missing" in info.value.message
        assert info.value.provider == "bedrock"


async def test_unreachable_endpoint_is_an_upstream_error() -> None:
    async with s3_client(CREDS, region=REGION, endpoint_url="http://127.0.0.1:9", max_attempts=1) as dead:
        with pytest.raises(TunegateError) as info:
            await upload_stream(dead, bucket="some-bucket", key="k.jsonl", chunks=chunked(b"x"))
    assert info.value.code == "provider_unreachable"
    assert info.value.http_status == 502


async def test_assume_role_gives_credentials_usable_for_s3(moto_url: str) -> None:
    temp = await assume_role(
        CREDS, region=REGION, role_arn=ROLE, external_id="tunegate-ext-1", endpoint_url=moto_url
    )
    assert temp.access_key_id and temp.secret_access_key and temp.session_token
    assert temp.access_key_id != CREDS.access_key_id
    assert temp.expiration is not None
    assert temp.secret_access_key not in repr(temp)
    async with s3_client(temp, region=REGION, endpoint_url=moto_url) as s3:
        await s3.create_bucket(Bucket="assumed-role-bucket")
        await upload_stream(s3, bucket="assumed-role-bucket", key="k.jsonl", chunks=chunked(b"hello\n"))
        assert await read_back(s3, "assumed-role-bucket", "k.jsonl") == b"hello\n"


@pytest.mark.parametrize(
    ("role", "external_id", "param"),
    [
        ("not-an-arn", None, HEADER_ROLE_ARN),
        ("arn:aws:iam::123:role/x", None, HEADER_ROLE_ARN),
        ("arn:aws:s3:::bucket", None, HEADER_ROLE_ARN),
        (ROLE, "x", HEADER_EXTERNAL_ID),
        (ROLE, "bad id with spaces", HEADER_EXTERNAL_ID),
    ],
)
async def test_assume_role_validates_first(role: str, external_id: str | None, param: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        await assume_role(
            CREDS, region=REGION, role_arn=role, external_id=external_id, endpoint_url="http://127.0.0.1:9"
        )
    assert info.value.param == param


def test_credentials_required() -> None:
    with pytest.raises(InvalidArgument):
        AwsCredentials("", "secret")
    with pytest.raises(InvalidArgument):
        AwsCredentials("AKID", "")
    assert "secret" not in repr(AwsCredentials("AKID", "secret", "token"))


async def test_bad_part_size_and_concurrency(s3, bucket: str) -> None:
    with pytest.raises(ValueError, match="part_size"):
        await upload_stream(s3, bucket=bucket, key="k", chunks=chunked(b"x"), part_size=1 * MiB)
    with pytest.raises(ValueError, match="concurrency"):
        await upload_stream(s3, bucket=bucket, key="k", chunks=chunked(b"x"), concurrency=0)
