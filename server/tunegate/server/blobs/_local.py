"""Blob storage: the bytes of files and upload parts, addressed by opaque keys.

`BlobStore` is the interface (an S3-compatible store can follow); `LocalBlobStore` keeps blobs
on local disk. Keys come from `new_blob_key()`, never from user input such as filenames.

Durability theory of operation (local store): a writer appends to `<root>/tmp/<random>.part`;
`commit()` fsyncs it, `os.replace`s it to `<root>/blobs/<key>` and fsyncs the directory. So a
blob is either absent or complete: a crash or `abort()` leaves at most a tmp file, which
`sweep()` removes at start-up. Blocking disk I/O runs in worker threads, one call per chunk.

Where the file system takes it (Linux `O_DIRECT`: ext4, xfs, btrfs, NFS, tmpfs since 6.6), a
blob is written around the page cache: the bytes are gathered in a page-aligned `STAGE_BYTES` buffer and
each full buffer goes to the device in one write; the tail (less than a buffer) goes through the
page cache at `commit()`. Copying a blob into the page cache is what a large upload spent most
of its CPU on: on this project's machine a buffered 1 GiB write costs 2.3 s of kernel time, a
direct one 0.1 s (`dd if=/dev/zero of=F bs=1M count=1024`, without and with `oflag=direct`).
Blobs of a stage or more are read the same way, a stage at a time into an aligned buffer (a
cold buffered read cost 2.3 s of CPU per GiB here, a direct one 0.2 s). A file system that
refuses the flag at `open()` or at a write gets the buffered path, for that blob and every later
one; a refused read, for that reader.

On the buffered path, every `WRITEBACK_BYTES` written are handed to the kernel's writeback at
once (Linux `sync_file_range(SYNC_FILE_RANGE_WRITE)`: start writing, do not wait). Without it
most of the blob was still dirty in the page cache at `commit()`, whose fsync then had to write
it: a 1 GiB upload waited ~2 s on that one fsync. A hint only: the fsync at commit is still what
makes the blob durable, and where the call is missing nothing is started early.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import fcntl
import mmap
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
STAGE_BYTES = 1024 * 1024
"""A direct write's size: a multiple of every block size a file system asks `O_DIRECT` to keep."""
_O_DIRECT: int = getattr(os, "O_DIRECT", 0)
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


def _set_direct(fd: int, on: bool) -> bool:
    """Turn `O_DIRECT` on or off for an open fd (Linux; `OSError` where refused); returns `on`."""
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags | _O_DIRECT if on else flags & ~_O_DIRECT)
    return on


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
    # On the direct path `_stage` holds the bytes taken but not yet written; `_written` counts
    # them too. `_stage` is None on the buffered path.
    def __init__(self, store: LocalBlobStore, key: str, tmp_path: Path, fd: int, direct: bool) -> None:
        self._store = store
        self._key = key
        self._tmp_path = tmp_path
        self._fd: int | None = fd
        self._lock = threading.Lock()
        self._written = 0  # bytes taken (under `_lock`)
        self._handed_over = 0  # of which handed to writeback
        self._done = False
        self._stage = mmap.mmap(-1, STAGE_BYTES) if direct else None  # page-aligned
        self._staged = 0  # bytes in `_stage`

    @property
    def size(self) -> int:
        return self._written

    def _write_sync(self, chunk: bytes) -> None:
        with self._lock:
            if self._fd is None:
                raise RuntimeError("blob writer is closed")
            if self._stage is None:
                self._write_all(memoryview(chunk))
                self._hint_writeback(self._written + len(chunk))
            else:
                self._write_staged(memoryview(chunk))
            self._written += len(chunk)

    def _write_staged(self, view: memoryview) -> None:
        while view and self._stage is not None:
            take = min(len(view), STAGE_BYTES - self._staged)
            self._stage[self._staged : self._staged + take] = view[:take]
            self._staged += take
            view = view[take:]
            if self._staged == STAGE_BYTES:
                self._flush_stage()
        if view:  # a direct write was refused or short: the direct path has ended
            self._write_all(view)

    def _flush_stage(self) -> None:
        """Write the stage's bytes: directly while they are a whole stage, else through the page
        cache (the tail at commit; the rest of a refused or short direct write, which ends the
        direct path for this blob)."""
        assert self._fd is not None and self._stage is not None
        buffered = False
        with memoryview(self._stage) as whole:
            rest = whole[: self._staged]
            if self._staged == STAGE_BYTES:
                try:
                    rest = rest[self._write_some(rest) :]
                except OSError as exc:
                    if exc.errno != errno.EINVAL:
                        raise
                    self._store.direct = False  # it took the flag at open() but not the write
            if rest:
                _set_direct(self._fd, False)
                buffered = True
                self._write_all(rest)
            rest.release()
        self._staged = 0
        if buffered:
            self._release_stage()

    def _write_some(self, view: memoryview) -> int:
        assert self._fd is not None
        return os.write(self._fd, view)

    def _write_all(self, view: memoryview) -> None:
        while view:
            view = view[self._write_some(view) :]

    def _hint_writeback(self, written: int) -> None:
        pending = written - self._handed_over
        if pending >= WRITEBACK_BYTES and _start_writeback is not None:
            assert self._fd is not None
            _start_writeback(self._fd, self._handed_over, pending)  # advisory: result ignored
            self._handed_over = written

    def _release_stage(self) -> None:
        if self._stage is not None:
            self._stage.close()
            self._stage = None

    async def write(self, chunk: bytes) -> None:
        if self._done:
            raise RuntimeError("blob writer is closed")
        if chunk:
            await asyncio.to_thread(self._write_sync, chunk)

    def _commit_sync(self) -> None:
        with self._lock:
            assert self._fd is not None
            if self._staged:
                self._flush_stage()
            self._release_stage()
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
            self._release_stage()
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


class _Reader:
    """A blob's bytes read in a worker thread, one `read()` at a time. A blob of at least one
    stage is read around the page cache where the file system allows (see the module's notes):
    whole stages into an aligned buffer, handed out in pieces. Same invariant as the writer:
    the fd is never closed under a running read."""

    def __init__(self, path: Path, direct: bool) -> None:
        self._fd: int | None = os.open(path, os.O_RDONLY)
        self._lock = threading.Lock()
        self._stage: mmap.mmap | None = None
        self._start = self._end = 0  # the stage's bytes not yet handed out
        self._direct = False
        try:
            if direct and os.fstat(self._fd).st_size >= STAGE_BYTES:
                self._stage = mmap.mmap(-1, STAGE_BYTES)
                with contextlib.suppress(OSError):  # refused: the stage holds buffered reads
                    self._direct = _set_direct(self._fd, True)
        except BaseException:
            self.close()
            raise

    def read(self, size: int) -> bytes:
        with self._lock:
            if self._fd is None:
                raise RuntimeError("blob reader is closed")
            if self._stage is None:
                return os.read(self._fd, size)
            if self._start == self._end:
                self._start, self._end = 0, self._fill()
            piece = self._stage[self._start : min(self._end, self._start + size)]
            self._start += len(piece)
            return piece

    def _fill(self) -> int:
        """Read the next stage. A refused direct read, or a short one (the end: the offset is
        no longer aligned), ends the direct path; the stage then holds buffered reads."""
        assert self._fd is not None and self._stage is not None
        try:
            got = os.readv(self._fd, [self._stage])
        except OSError as exc:
            if exc.errno != errno.EINVAL or not self._direct:
                raise
            self._direct = _set_direct(self._fd, False)
            got = os.readv(self._fd, [self._stage])
        if got < STAGE_BYTES and self._direct:
            self._direct = _set_direct(self._fd, False)
        return got

    def close(self) -> None:
        with self._lock:
            if self._stage is not None:
                self._stage.close()
                self._stage = None
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class LocalBlobStore:
    """Blobs as files under `root/blobs`, written via `root/tmp`. One process owns a root."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.direct = bool(_O_DIRECT)
        """Whether new blobs are written around the page cache (cleared once the file system
        refuses `O_DIRECT`)."""
        self.tmp_dir = self.root / "tmp"
        self.blob_dir = self.root / "blobs"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.blob_dir.mkdir(parents=True, exist_ok=True)

    def path_for(self, key: str) -> Path:
        """The final location of a blob (which may not exist)."""
        return self.blob_dir / _check_key(key)

    def _create_tmp(self) -> tuple[Path, int, bool]:
        path = self.tmp_dir / f"{secrets.token_hex(16)}.part"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        if self.direct:
            try:
                return path, os.open(path, flags | _O_DIRECT, 0o600), True
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                self.direct = False  # Linux creates the file before it refuses the flag
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        return path, os.open(path, flags, 0o600), False

    async def open_writer(self, key: str) -> BlobWriter:
        _check_key(key)
        # Inline, not in a thread: if the caller were cancelled while a thread created the file,
        # nobody would hold the writer to abort it and the tmp file would leak until restart.
        path, fd, direct = self._create_tmp()
        return _LocalWriter(self, key, path, fd, direct)

    async def open_reader(self, key: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> AsyncIterator[bytes]:
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        # Opened inline, like a writer: a task cancelled while a thread opened it would leak the fd.
        reader = _Reader(self.path_for(key), self.direct)
        try:
            while chunk := await asyncio.to_thread(reader.read, chunk_size):
                yield chunk
        finally:
            reader.close()

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
