"""The local blob store: direct writes and reads around the page cache where the file system takes
them, the buffered path (with writeback started as it goes) where it does not."""

from __future__ import annotations

import errno
import fcntl
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from tunegate.server.blobs import STAGE_BYTES, WRITEBACK_BYTES, LocalBlobStore, new_blob_key
from tunegate.server.blobs import _local as blobs

CHUNK = 3 * 1024 * 1024 + 17  # not a multiple of a stage: stages fill across chunks


def _record(monkeypatch: pytest.MonkeyPatch, name: str) -> list[tuple[int, bool]]:
    """(bytes moved, direct?) of every `os.<name>` call (`write` or `readv`) a blob makes."""
    calls: list[tuple[int, bool]] = []
    real = getattr(os, name)

    def call(fd: int, data: Any) -> int:
        direct = bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT)
        moved: int = real(fd, data)
        calls.append((moved, direct))
        return moved

    monkeypatch.setattr(os, name, call)
    return calls


async def _write_blob(store: LocalBlobStore, chunks: list[bytes]) -> str:
    key = new_blob_key()
    writer = await store.open_writer(key)
    for chunk in chunks:
        await writer.write(chunk)
    assert writer.size == sum(map(len, chunks))
    assert await writer.commit() == sum(map(len, chunks))
    return key


async def _read_blob(store: LocalBlobStore, key: str, chunk_size: int) -> list[bytes]:
    return [piece async for piece in store.open_reader(key, chunk_size)]


async def test_written_ranges_are_handed_to_writeback_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = blobs._start_writeback
    calls: list[tuple[int, int, int]] = []

    def record(fd: int, offset: int, length: int) -> int:
        result = real(fd, offset, length) if real is not None else 0
        calls.append((offset, length, result))
        return result

    monkeypatch.setattr(blobs, "_start_writeback", record)
    store = LocalBlobStore(tmp_path)
    store.direct = False  # writeback is the buffered path's
    chunk = os.urandom(CHUNK)
    key = await _write_blob(store, [chunk] * 6)

    assert calls, "nothing was handed to writeback"
    offsets = [offset for offset, _, _ in calls]
    assert offsets[0] == 0
    assert all(a + length == b for (a, length, _), b in zip(calls, offsets[1:], strict=False))
    assert all(length >= WRITEBACK_BYTES for _, length, _ in calls)
    assert sum(length for _, length, _ in calls) <= 6 * len(chunk)
    if real is not None:
        assert [result for _, _, result in calls] == [0] * len(calls)  # the call itself works
    data = b"".join(await _read_blob(store, key, 1024 * 1024))
    assert data == chunk * 6


def test_writeback_is_available_on_linux() -> None:
    assert (blobs._start_writeback is not None) == sys.platform.startswith("linux")


@pytest.mark.skipif(not hasattr(os, "O_DIRECT"), reason="O_DIRECT is Linux's")
async def test_whole_stages_are_written_directly_and_the_tail_through_the_page_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalBlobStore(tmp_path)
    assert store.direct
    writes = _record(monkeypatch, "write")
    chunks = [os.urandom(CHUNK), os.urandom(100), os.urandom(CHUNK)]
    key = await _write_blob(store, chunks)

    total = sum(map(len, chunks))
    whole, tail = divmod(total, STAGE_BYTES)
    assert writes == [(STAGE_BYTES, True)] * whole + [(tail, False)]
    assert store.direct
    assert store.path_for(key).stat().st_size == total
    assert not list(store.tmp_dir.iterdir())
    reads = _record(monkeypatch, "readv")
    for size in (64 * 1024, 300 * 1024 + 5, STAGE_BYTES, 4 * STAGE_BYTES):
        reads.clear()
        pieces = await _read_blob(store, key, size)
        assert b"".join(pieces) == b"".join(chunks)
        assert all(0 < len(piece) <= size for piece in pieces)
        assert reads == [(STAGE_BYTES, True)] * whole + [(tail, True), (0, False)]


@pytest.mark.skipif(not hasattr(os, "O_DIRECT"), reason="O_DIRECT is Linux's")
async def test_a_refused_direct_read_goes_on_through_the_page_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalBlobStore(tmp_path)
    chunks = [os.urandom(CHUNK) for _ in range(2)]
    key = await _write_blob(store, chunks)
    real = os.readv

    def refusing_readv(fd: int, buffers: Any) -> int:
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, buffers)

    monkeypatch.setattr(os, "readv", refusing_readv)
    assert b"".join(await _read_blob(store, key, 200_000)) == b"".join(chunks)


@pytest.mark.skipif(not hasattr(os, "O_DIRECT"), reason="O_DIRECT is Linux's")
async def test_a_blob_smaller_than_a_stage_is_written_and_read_buffered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalBlobStore(tmp_path)
    writes = _record(monkeypatch, "write")
    key = await _write_blob(store, [b"hello ", b"world"])
    assert writes == [(11, False)]
    assert await _read_blob(store, key, 4) == [b"hell", b"o wo", b"rld"]
    empty = await _write_blob(store, [])
    assert await _read_blob(store, empty, 4) == []


async def test_a_file_system_that_refuses_direct_open_gets_buffered_blobs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.open

    def refusing_open(path: Any, flags: int, mode: int = 0o777) -> int:
        if flags & blobs._O_DIRECT:
            os.close(real(path, flags & ~blobs._O_DIRECT, mode))  # Linux creates it, then refuses
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(path, flags, mode)

    monkeypatch.setattr(blobs, "_O_DIRECT", getattr(os, "O_DIRECT", 0o40000))
    monkeypatch.setattr(os, "open", refusing_open)
    store = LocalBlobStore(tmp_path)
    store.direct = True
    chunk = os.urandom(CHUNK)
    key = await _write_blob(store, [chunk, chunk])
    assert not store.direct
    assert not list(store.tmp_dir.iterdir())  # the refused open's file is gone
    assert b"".join(await _read_blob(store, key, STAGE_BYTES)) == chunk * 2
    assert b"".join(await _read_blob(store, await _write_blob(store, [chunk]), 99_999)) == chunk


@pytest.mark.skipif(not hasattr(os, "O_DIRECT"), reason="O_DIRECT is Linux's")
async def test_a_refused_direct_write_goes_on_through_the_page_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.write
    refused: list[int] = []

    def refusing_write(fd: int, data: Any) -> int:
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            refused.append(len(data))
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, data)

    monkeypatch.setattr(os, "write", refusing_write)
    store = LocalBlobStore(tmp_path)
    chunks = [os.urandom(CHUNK) for _ in range(3)]
    key = await _write_blob(store, chunks)
    assert refused == [STAGE_BYTES]  # once: the blob, and every later one, is buffered
    assert not store.direct
    assert b"".join(await _read_blob(store, key, STAGE_BYTES)) == b"".join(chunks)


@pytest.mark.skipif(not hasattr(os, "O_DIRECT"), reason="O_DIRECT is Linux's")
async def test_a_short_direct_write_is_finished_through_the_page_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.write
    shorts: list[int] = []

    def short_write(fd: int, data: Any) -> int:
        if not shorts and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            shorts.append(len(data))
            return real(fd, memoryview(data)[: 64 * 1024])
        return real(fd, data)

    monkeypatch.setattr(os, "write", short_write)
    store = LocalBlobStore(tmp_path)
    chunks = [os.urandom(CHUNK) for _ in range(2)]
    key = await _write_blob(store, chunks)
    assert shorts == [STAGE_BYTES]
    assert store.direct  # the file system takes direct writes; the next blob uses them
    assert b"".join(await _read_blob(store, key, 123_457)) == b"".join(chunks)


@pytest.mark.skipif(not hasattr(os, "O_DIRECT"), reason="O_DIRECT is Linux's")
async def test_an_aborted_direct_blob_leaves_nothing(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    key = new_blob_key()
    writer = await store.open_writer(key)
    await writer.write(os.urandom(CHUNK))
    await writer.abort()
    await writer.abort()
    assert not list(store.tmp_dir.iterdir())
    assert not store.path_for(key).exists()
    with pytest.raises(RuntimeError):
        await writer.write(b"more")
