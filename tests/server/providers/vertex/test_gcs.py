"""GCS streaming for the Vertex provider: against gcp-storage-emulator (an implementation nobody
here wrote) for uploads and read-back, and the protocol-checking fake (tests/fakes/gcs.py) for
chunk rules, cancellation and refusals the emulator does not model."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterator

import pytest
from gcp_storage_emulator.server import create_server
from tunegate.server.errors import (
    InvalidArgument,
    PermissionDenied,
    TunegateError,
    Unauthenticated,
    UpstreamError,
)
from tunegate.server.providers.vertex._gcs import (
    HEADER_BUCKET,
    HEADER_OBJECT,
    HEADER_PROJECT,
    HEADER_REGION,
    MiB,
    UploadStats,
    upload_stream,
    validate_bucket,
    validate_object,
    validate_project,
    validate_region,
)

from tests.fakes.gcs import FakeGCS


def payload(size: int) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(counter.to_bytes(8, "big")).digest() * 64
        counter += 1
    return bytes(out[:size])


async def chunked(data: bytes, chunk: int = 300_001) -> AsyncIterator[bytes]:
    for i in range(0, len(data), chunk):
        yield data[i : i + chunk]


@pytest.fixture(scope="module")
def emulator() -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket="tunegate-data")
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def emulator_read(url: str, bucket: str, name: str) -> bytes:
    quoted = urllib.parse.quote(name, safe="")
    with urllib.request.urlopen(f"{url}/download/storage/v1/b/{bucket}/o/{quoted}?alt=media") as answer:
        data: bytes = answer.read()
    return data


@pytest.fixture
async def fake() -> AsyncIterator[FakeGCS]:
    gcs = FakeGCS(buckets={"tunegate-data"}, tokens={"ya29.good"})
    await gcs.start()
    yield gcs
    await gcs.stop()
    assert gcs.violations == []


@pytest.mark.parametrize("size", [0, 1, 1000, 8 * MiB, 20 * MiB + 12345])
async def test_emulator_reads_back_what_was_streamed(emulator: str, size: int) -> None:
    data = payload(size)
    stats = UploadStats()
    uri, written = await upload_stream(
        bucket="tunegate-data",
        name=f"train/file-{size}.jsonl",
        chunks=chunked(data),
        token="ya29.any",
        endpoint=emulator,
        stats=stats,
    )
    assert (uri, written) == (f"gs://tunegate-data/train/file-{size}.jsonl", size)
    assert stats.max_buffered <= 8 * MiB
    got = await asyncio.to_thread(emulator_read, emulator, "tunegate-data", f"train/file-{size}.jsonl")
    assert got == data


async def test_emulator_missing_bucket_names_the_bucket_header(emulator: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await upload_stream(
            bucket="no-such-bucket", name="k.jsonl", chunks=chunked(b"x"), token="t", endpoint=emulator
        )
    assert caught.value.param == HEADER_BUCKET and caught.value.provider == "vertex-ai"


async def test_chunks_follow_the_protocol(fake: FakeGCS) -> None:
    data = payload(20 * MiB)
    stats = UploadStats()
    _, size = await upload_stream(
        bucket="tunegate-data",
        name="big.jsonl",
        chunks=chunked(data, 64 * 1024),
        token="ya29.good",
        endpoint=fake.url,
        chunk_size=8 * MiB,
        stats=stats,
    )
    assert size == len(data)
    assert fake.chunk_sizes == [8 * MiB, 8 * MiB, 4 * MiB]
    assert fake.objects[("tunegate-data", "big.jsonl")] == data
    assert stats.chunks == 3 and stats.max_buffered == 8 * MiB


async def test_stream_of_whole_chunks_ends_with_a_status_request(fake: FakeGCS) -> None:
    data = payload(2 * MiB)
    await upload_stream(
        bucket="tunegate-data",
        name="whole.jsonl",
        chunks=chunked(data),
        token="ya29.good",
        endpoint=fake.url,
        chunk_size=1 * MiB,
    )
    assert fake.chunk_sizes == [MiB, MiB]
    assert fake.objects[("tunegate-data", "whole.jsonl")] == data


class Boom(Exception):
    pass


async def test_source_failure_mid_way_deletes_the_session(fake: FakeGCS) -> None:
    async def breaks() -> AsyncIterator[bytes]:
        async for chunk in chunked(payload(3 * MiB)):
            yield chunk
        raise Boom("the source broke")

    with pytest.raises(Boom):
        await upload_stream(
            bucket="tunegate-data",
            name="broken.jsonl",
            chunks=breaks(),
            token="ya29.good",
            endpoint=fake.url,
            chunk_size=1 * MiB,
        )
    assert len(fake.chunk_sizes) == 3  # three chunks were sent before the failure
    assert fake.deleted_sessions == 1 and fake.sessions == {}
    assert fake.objects == {}


async def test_server_error_mid_way_is_upstream_and_deletes_the_session(fake: FakeGCS) -> None:
    fake.fail_chunk = dict.fromkeys(range(1, 6), 503)  # google-resumable-media retries once at max_retries=0
    with pytest.raises(TunegateError) as caught:
        await upload_stream(
            bucket="tunegate-data",
            name="k.jsonl",
            chunks=chunked(payload(3 * MiB)),
            token="ya29.good",
            endpoint=fake.url,
            chunk_size=1 * MiB,
            max_retries=0,
        )
    assert isinstance(caught.value, UpstreamError)
    assert fake.deleted_sessions == 1 and fake.objects == {}


async def test_cancellation_deletes_the_session(fake: FakeGCS) -> None:
    gate = asyncio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        yield payload(2 * MiB)
        gate.set()
        await asyncio.Event().wait()
        yield b""

    task = asyncio.create_task(
        upload_stream(
            bucket="tunegate-data",
            name="c.jsonl",
            chunks=stalls(),
            token="ya29.good",
            endpoint=fake.url,
            chunk_size=1 * MiB,
        )
    )
    await gate.wait()
    assert len(fake.sessions) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fake.sessions == {} and fake.deleted_sessions == 1


async def test_refusals(fake: FakeGCS) -> None:
    with pytest.raises(Unauthenticated):
        await upload_stream(
            bucket="tunegate-data", name="k", chunks=chunked(b"x"), token="ya29.bad", endpoint=fake.url
        )
    fake.deny_initiate = 403
    with pytest.raises(PermissionDenied) as caught:
        await upload_stream(
            bucket="tunegate-data", name="k", chunks=chunked(b"x"), token="ya29.good", endpoint=fake.url
        )
    assert caught.value.param == HEADER_BUCKET


async def test_token_callable_is_asked_per_request(fake: FakeGCS) -> None:
    calls = 0

    async def token() -> str:
        nonlocal calls
        calls += 1
        return "ya29.good"

    await upload_stream(
        bucket="tunegate-data",
        name="k",
        chunks=chunked(payload(3 * MiB)),
        token=token,
        endpoint=fake.url,
        chunk_size=1 * MiB,
    )
    assert calls == 4  # before the initiate and before each later request (2 chunks, the closing status)


async def test_unreachable_endpoint() -> None:
    with pytest.raises(TunegateError) as caught:
        await upload_stream(
            bucket="tunegate-data",
            name="k",
            chunks=chunked(b"x"),
            token="t",
            endpoint="http://127.0.0.1:9",
            max_retries=0,
        )
    assert caught.value.code == "provider_unreachable"


async def test_bad_arguments_refused_before_any_request() -> None:
    for bucket, name, param in [("Bad_Bucket", "k", HEADER_BUCKET), ("good-bucket", "a/../b", HEADER_OBJECT)]:
        with pytest.raises(InvalidArgument) as caught:
            await upload_stream(
                bucket=bucket, name=name, chunks=chunked(b"x"), token="t", endpoint="http://127.0.0.1:9"
            )
        assert caught.value.param == param
    with pytest.raises(ValueError, match="chunk_size"):
        await upload_stream(bucket="good-bucket", name="k", chunks=chunked(b"x"), token="t", chunk_size=1000)
    for endpoint in ("ftp://x", "http://u@127.0.0.1:9", "http://127.0.0.1:9/path", "http://h?x=1"):
        with pytest.raises(ValueError, match="endpoint"):
            await upload_stream(
                bucket="good-bucket", name="k", chunks=chunked(b"x"), token="t", endpoint=endpoint
            )


@pytest.mark.parametrize("name", ["abc", "my-bucket", "my_bucket.data", "a" * 63, "a.b." + "c" * 63])
def test_valid_buckets(name: str) -> None:
    assert validate_bucket(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "ab",
        "a" * 64,
        "My-Bucket",
        "-b",
        "b-",
        "a..b",
        "192.168.5.4",
        "goog-x",
        "my-google-b",
        "evil.com#",
        "b/../x",
        "b@evil.com",
        "b?x",
        "b x",
        "b%2f",
    ],
)
def test_invalid_buckets(name: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_bucket(name)
    assert caught.value.param == HEADER_BUCKET


@pytest.mark.parametrize("name", ["a", "train/file-abc.jsonl", "x/y z(1).jsonl", "é.jsonl", "a" * 1024])
def test_valid_objects(name: str) -> None:
    assert validate_object(name) == name


@pytest.mark.parametrize(
    "name", ["", "/abs", "a//b", "a/../b", "./a", "a#b", "a?b", "a*b", "a[1]", "a\nb", "a" * 1025, "d/"]
)
def test_invalid_objects(name: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_object(name)
    assert caught.value.param == HEADER_OBJECT


@pytest.mark.parametrize("region", ["us-central1", "europe-west4", "northamerica-northeast1", "global"])
def test_valid_regions(region: str) -> None:
    assert validate_region(region) == region


@pytest.mark.parametrize(
    "region",
    ["", "us-central1.evil.com", "us-central1#", "evil.com/", "US-CENTRAL1", "us-central", "a@b", "global/x"],
)
def test_invalid_regions(region: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_region(region)
    assert caught.value.param == HEADER_REGION


@pytest.mark.parametrize("project", ["my-project-123", "proj-123456", "example.com:my-project"])
def test_valid_projects(project: str) -> None:
    assert validate_project(project) == project


@pytest.mark.parametrize(
    "project",
    [
        "",
        "short",
        "1project",
        "proj-",
        "Proj-123",
        "p/../x-123",
        "proj-123@evil",
        "proj-123#",
        "proj?x=123456",
    ],
)
def test_invalid_projects(project: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_project(project)
    assert caught.value.param == HEADER_PROJECT
