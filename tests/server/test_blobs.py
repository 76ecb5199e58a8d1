"""The local blob store hands written ranges to the kernel's writeback as it goes."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from server import blobs
from server.blobs import WRITEBACK_BYTES, LocalBlobStore, new_blob_key


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
    key = new_blob_key()
    writer = await store.open_writer(key)
    chunk = os.urandom(3 * 1024 * 1024 + 17)
    for _ in range(6):
        await writer.write(chunk)
    assert await writer.commit() == 6 * len(chunk)

    assert calls, "nothing was handed to writeback"
    offsets = [offset for offset, _, _ in calls]
    assert offsets[0] == 0
    assert all(a + length == b for (a, length, _), b in zip(calls, offsets[1:], strict=False))
    assert all(length >= WRITEBACK_BYTES for _, length, _ in calls)
    assert sum(length for _, length, _ in calls) <= 6 * len(chunk)
    if real is not None:
        assert [result for _, _, result in calls] == [0] * len(calls)  # the call itself works
    data = b"".join([piece async for piece in store.open_reader(key)])
    assert data == chunk * 6


def test_writeback_is_available_on_linux() -> None:
    assert (blobs._start_writeback is not None) == sys.platform.startswith("linux")
