"""`S3BlobStore` against moto's S3 server on loopback: multipart blobs, abort, cancelled commits,
failures mid-upload, delete and sweep."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import pytest
from aiobotocore.session import get_session
from moto.server import ThreadedMotoServer
from tunegate.server.blobs import MIN_PART_BYTES, BlobSettings, S3BlobStore, new_blob_key

PART = MIN_PART_BYTES


def _start_moto() -> tuple[ThreadedMotoServer, str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server, url = _start_moto()
    try:
        yield url
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore's default chain reads these (moto accepts any)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


async def _s3(url: str) -> Any:
    return get_session().create_client("s3", region_name="us-east-1", endpoint_url=url)


@pytest.fixture
async def s3(moto_url: str) -> AsyncIterator[Any]:
    async with await _s3(moto_url) as client:
        yield client


@pytest.fixture
async def bucket(s3: Any) -> str:
    name = f"blobs-{os.urandom(4).hex()}"
    await s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
async def store(moto_url: str, bucket: str) -> AsyncIterator[S3BlobStore]:
    blob_store = S3BlobStore(
        BlobSettings(
            url=f"s3://{bucket}/tg/blobs", endpoint_url=moto_url, region="us-east-1", part_bytes=PART
        )
    )
    yield blob_store
    await blob_store.aclose()


def _payload(size: int) -> bytes:
    return (os.urandom(4096) * (size // 4096 + 1))[:size]


async def _read(store: S3BlobStore, key: str, chunk_size: int = 1 << 20) -> bytes:
    return b"".join([chunk async for chunk in store.open_reader(key, chunk_size)])


async def _objects(s3: Any, bucket: str) -> list[str]:
    answer = await s3.list_objects_v2(Bucket=bucket)
    return [item["Key"] for item in answer.get("Contents", [])]


async def _uploads(s3: Any, bucket: str) -> list[str]:
    answer = await s3.list_multipart_uploads(Bucket=bucket)
    return [item["Key"] for item in answer.get("Uploads", [])]


async def test_a_multipart_blob_appears_only_at_commit(store: S3BlobStore, s3: Any, bucket: str) -> None:
    payload = _payload(2 * PART + 12345)
    key = new_blob_key()
    writer = await store.open_writer(key)
    for start in range(0, len(payload), 1_000_003):  # chunks straddle part boundaries
        await writer.write(payload[start : start + 1_000_003])
    assert writer.size == len(payload)
    assert await _uploads(s3, bucket) == [f"tg/blobs/{key}"]
    assert await _objects(s3, bucket) == []
    assert await writer.commit() == len(payload)
    assert await _objects(s3, bucket) == [f"tg/blobs/{key}"]
    assert await _uploads(s3, bucket) == []
    head = await s3.head_object(Bucket=bucket, Key=f"tg/blobs/{key}")
    assert head["ETag"].strip('"').endswith("-3")  # a multipart object's ETag counts its parts
    chunks = [chunk async for chunk in store.open_reader(key, 65536)]
    assert max(map(len, chunks)) <= 65536
    assert b"".join(chunks) == payload


@pytest.mark.parametrize("size", [0, 1, PART - 1])
async def test_a_blob_smaller_than_a_part_is_one_put(
    store: S3BlobStore, s3: Any, bucket: str, size: int
) -> None:
    payload = _payload(size)
    key = new_blob_key()
    writer = await store.open_writer(key)
    await writer.write(payload)
    assert await _uploads(s3, bucket) == []
    assert await _objects(s3, bucket) == []
    assert await writer.commit() == size
    assert await _read(store, key) == payload


async def test_a_blob_of_exactly_one_part(store: S3BlobStore) -> None:
    payload = _payload(PART)
    key = new_blob_key()
    writer = await store.open_writer(key)
    await writer.write(payload)
    await writer.commit()
    assert await _read(store, key) == payload


async def test_abort_leaves_no_object_and_no_parts(store: S3BlobStore, s3: Any, bucket: str) -> None:
    writer = await store.open_writer(new_blob_key())
    await writer.write(_payload(2 * PART + 1))
    assert len(await _uploads(s3, bucket)) == 1
    await writer.abort()
    await writer.abort()  # a no-op
    assert await _uploads(s3, bucket) == []
    assert await _objects(s3, bucket) == []
    with pytest.raises(RuntimeError):
        await writer.write(b"x")


async def test_a_cancelled_commit_leaves_nothing_visible(store: S3BlobStore, s3: Any, bucket: str) -> None:
    # Cancel the commit after a growing number of loop turns, so it is hit while the last part
    # is sent, while CompleteMultipartUpload runs, and after it: whichever, a commit that raised
    # CancelledError left no object (and, after the `abort()` every caller runs in `finally`, no
    # upload) behind, and one that returned left its blob.
    outcomes = set()
    for turns in range(0, 60, 3):
        key = new_blob_key()
        writer = await store.open_writer(key)
        await writer.write(_payload(PART + 10))
        commit = asyncio.create_task(writer.commit())
        for _ in range(turns):
            await asyncio.sleep(0)
        commit.cancel()
        try:
            await commit
        except asyncio.CancelledError:
            outcomes.add("cancelled")
            await writer.abort()
            assert f"tg/blobs/{key}" not in await _objects(s3, bucket)
        else:
            outcomes.add("committed")
            assert f"tg/blobs/{key}" in await _objects(s3, bucket)
        assert await _uploads(s3, bucket) == []
    assert "cancelled" in outcomes


async def test_missing_blob_and_delete(store: S3BlobStore, s3: Any, bucket: str) -> None:
    with pytest.raises(FileNotFoundError):
        await _read(store, new_blob_key())
    key = new_blob_key()
    writer = await store.open_writer(key)
    await writer.write(b"hello")
    await writer.commit()
    await store.delete(key)
    assert await _objects(s3, bucket) == []
    await store.delete(key)  # missing: not an error
    with pytest.raises(FileNotFoundError):
        await _read(store, key)
    with pytest.raises(ValueError):
        await store.open_writer("../escape")


async def test_sweep_aborts_only_old_uploads_under_the_prefix(
    store: S3BlobStore, s3: Any, bucket: str
) -> None:
    await s3.create_multipart_upload(Bucket=bucket, Key=f"tg/blobs/{new_blob_key()}")
    other = await s3.create_multipart_upload(Bucket=bucket, Key=f"elsewhere/{new_blob_key()}")
    # moto reports every upload as initiated in 2010: younger than a century, older than an hour.
    assert await store.sweep(older_than=timedelta(days=36500)) == 0
    assert len(await _uploads(s3, bucket)) == 2
    assert await store.sweep() == 1
    assert await _uploads(s3, bucket) == [other["Key"]]


async def test_s3_going_away_mid_upload_leaves_nothing_visible(bucket: str, s3: Any) -> None:
    # moto's servers share one in-memory backend: a second server sees what the first stored.
    doomed, doomed_url = _start_moto()
    store = S3BlobStore(BlobSettings(url=f"s3://{bucket}/tg", endpoint_url=doomed_url, part_bytes=PART))
    try:
        key = new_blob_key()
        writer = await store.open_writer(key)
        await writer.write(_payload(2 * PART))
        await asyncio.sleep(0.5)  # the first parts reach S3 (not asserted: the outcome is the same)
        doomed.stop()
        with pytest.raises(Exception) as failure:
            await writer.write(_payload(PART))
            await writer.commit()
        assert not isinstance(failure.value, AssertionError)
        await writer.abort()
    finally:
        await store.aclose()
    assert await _objects(s3, bucket) == []
    assert await _uploads(s3, bucket) == [f"tg/{key}"]  # the abort could not reach S3 either
    survivor = S3BlobStore(BlobSettings(url=f"s3://{bucket}/tg", endpoint_url=_endpoint(s3), part_bytes=PART))
    try:
        assert await survivor.sweep() == 1
    finally:
        await survivor.aclose()
    assert await _uploads(s3, bucket) == []


def _endpoint(s3: Any) -> str:
    return str(s3.meta.endpoint_url)
