"""Blob storage: the bytes of files and upload parts, addressed by opaque keys.

`BlobStore` is the interface (an S3-compatible store can follow); `LocalBlobStore` keeps blobs
on local disk. Keys come from `new_blob_key()`, never from user input such as filenames.

Durability theory of operation (local store): a writer appends to `<root>/tmp/<random>.part`;
`commit()` fsyncs it, `os.replace`s it to `<root>/blobs/<key>` and fsyncs the directory. So a
blob is either absent or complete: a crash or `abort()` leaves at most a tmp file, which
`sweep()` removes at start-up. Blocking disk I/O runs in worker threads, one call per chunk.

While a blob is written, every `WRITEBACK_BYTES` written are handed to the kernel's writeback
at once (Linux `sync_file_range(SYNC_FILE_RANGE_WRITE)`: start writing, do not wait). Without
it most of the blob was still dirty in the page cache at `commit()`, whose fsync then had to
write it: a 1 GiB upload waited ~2 s on that one fsync. A hint only: the fsync at commit is
still what makes the blob durable, and where the call is missing nothing is started early.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import re
import secrets
import sys
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Protocol

__all__ = ["DEFAULT_CHUNK_SIZE", "BlobStore", "BlobWriter", "LocalBlobStore", "new_blob_key"]

DEFAULT_CHUNK_SIZE = 1024 * 1024
WRITEBACK_BYTES = 8 * 1024 * 1024
_SYNC_FILE_RANGE_WRITE = 2  # <linux/fs.h>
_KEY = re.compile(r"[A-Za-z0-9_-]{8,128}")


def new_blob_key() -> str:
    """A fresh random blob key (128 bits, hex)."""
    return secrets.token_hex(16)


class BlobWriter(Protocol):
    """One blob being written. Exactly one of `commit()` / `abort()` ends it; `abort()` after
    `commit()` or a second `abort()` is a no-op, so `abort()` is safe in `finally` blocks."""

    @property
    def size(self) -> int:
        """Bytes written so far."""
        ...

    async def write(self, chunk: bytes) -> None: ...

    async def commit(self) -> int:
        """Make the blob visible under its key; returns its size."""
        ...

    async def abort(self) -> None:
        """Discard everything written; nothing becomes visible."""
        ...


class BlobStore(Protocol):
    """Where blob bytes live."""

    async def open_writer(self, key: str) -> BlobWriter: ...

    def open_reader(self, key: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> AsyncIterator[bytes]:
        """The blob's bytes in chunks of at most `chunk_size`. Raises `FileNotFoundError`."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the blob; a missing blob is not an error."""
        ...

    async def sweep(self) -> int:
        """Remove leftovers of interrupted writes; returns how many were removed."""
        ...


def _check_key(key: str) -> str:
    if not _KEY.fullmatch(key):
        raise ValueError(f"invalid blob key {key!r}")
    return key


def _writeback_starter() -> Callable[[int, int, int], int] | None:
    """`sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE)` where libc has it."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return lambda fd, offset, length: function(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


_start_writeback = _writeback_starter()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _LocalWriter:
    # Invariant: the fd is only touched while holding `_lock`. A write may still be running in a
    # worker thread when the awaiting task is cancelled; `abort()` then waits (at most one chunk)
    # for it instead of closing an fd another thread is using, whose number could be reused.
    def __init__(self, store: LocalBlobStore, key: str, tmp_path: Path, fd: int) -> None:
        self._store = store
        self._key = key
        self._tmp_path = tmp_path
        self._fd: int | None = fd
        self._lock = threading.Lock()
        self._written = 0  # bytes in the file (written under `_lock`)
        self._handed_over = 0  # of which handed to writeback
        self._done = False

    @property
    def size(self) -> int:
        return self._written

    def _write_sync(self, chunk: bytes) -> None:
        with self._lock:
            if self._fd is None:
                raise RuntimeError("blob writer is closed")
            view = memoryview(chunk)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            self._written += len(chunk)
            pending = self._written - self._handed_over
            if pending >= WRITEBACK_BYTES and _start_writeback is not None:
                _start_writeback(self._fd, self._handed_over, pending)  # advisory: result ignored
                self._handed_over = self._written

    async def write(self, chunk: bytes) -> None:
        if self._done:
            raise RuntimeError("blob writer is closed")
        if chunk:
            await asyncio.to_thread(self._write_sync, chunk)

    def _commit_sync(self) -> None:
        with self._lock:
            assert self._fd is not None
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
        final = self._store.path_for(self._key)
        os.replace(self._tmp_path, final)
        _fsync_dir(final.parent)

    async def commit(self) -> int:
        if self._done:
            raise RuntimeError("blob writer is closed")
        self._done = True
        renaming = asyncio.ensure_future(asyncio.to_thread(self._commit_sync))
        try:
            await asyncio.shield(renaming)
        except asyncio.CancelledError:
            # The rename may still land after we were cancelled; wait for it (one fsync), then
            # undo it, so a cancelled commit leaves nothing visible.
            try:
                await renaming
            except Exception:
                pass
            finally:
                self._discard()
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._store.path_for(self._key))
            raise
        except BaseException:
            self._discard()
            raise
        return self._written

    def _discard(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp_path)

    async def abort(self) -> None:
        # Runs inline, not in a thread: it must finish even when the calling task is being
        # cancelled (client went away), and it is two cheap syscalls.
        if self._done:
            return
        self._done = True
        self._discard()


class LocalBlobStore:
    """Blobs as files under `root/blobs`, written via `root/tmp`. One process owns a root."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.tmp_dir = self.root / "tmp"
        self.blob_dir = self.root / "blobs"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.blob_dir.mkdir(parents=True, exist_ok=True)

    def path_for(self, key: str) -> Path:
        """The final location of a blob (which may not exist)."""
        return self.blob_dir / _check_key(key)

    def _create_tmp(self) -> tuple[Path, int]:
        path = self.tmp_dir / f"{secrets.token_hex(16)}.part"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        return path, fd

    async def open_writer(self, key: str) -> BlobWriter:
        _check_key(key)
        # Inline, not in a thread: if the caller were cancelled while a thread created the file,
        # nobody would hold the writer to abort it and the tmp file would leak until restart.
        path, fd = self._create_tmp()
        return _LocalWriter(self, key, path, fd)

    async def open_reader(self, key: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> AsyncIterator[bytes]:
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        path = self.path_for(key)
        handle = await asyncio.to_thread(open, path, "rb", buffering=0)
        lock = threading.Lock()

        def read() -> bytes:
            with lock:  # same invariant as the writer: never close under a running read
                return handle.read(chunk_size) or b""

        try:
            while chunk := await asyncio.to_thread(read):
                yield chunk
        finally:
            with lock:
                handle.close()

    async def delete(self, key: str) -> None:
        def unlink() -> None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path_for(key))

        await asyncio.to_thread(unlink)

    async def sweep(self) -> int:
        """Remove every tmp file; call only when no writer of this root is open (start-up)."""

        def sweep_sync() -> int:
            removed = 0
            for entry in os.scandir(self.tmp_dir):
                if entry.is_file() and entry.name.endswith(".part"):
                    try:
                        os.unlink(entry.path)
                        removed += 1
                    except FileNotFoundError:
                        pass
            return removed

        return await asyncio.to_thread(sweep_sync)
