"""Moving the local provider's bytes between the scratch disk and the blob store.

Only the `BlobStore` protocol is used (`open_writer` / `open_reader` / `delete`), so this works
unchanged on local disk or S3. Directories travel as uncompressed tar archives, built in and
extracted from a temporary file beside their target (never held in memory); extraction goes
to a temporary directory renamed into place, so a reader never sees half a directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tarfile
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from tunegate.server.blobs import BlobStore, new_blob_key

__all__ = ["download_dir", "download_file", "upload_chunks", "upload_dir", "upload_file"]

_CHUNK = 1024 * 1024


async def upload_chunks(blobs: BlobStore, chunks: AsyncIterator[bytes]) -> tuple[str, int]:
    """Store `chunks` as a new blob; returns its key and size."""
    key = new_blob_key()
    writer = await blobs.open_writer(key)
    try:
        async for chunk in chunks:
            await writer.write(chunk)
        size = await writer.commit()
    except BaseException:
        await writer.abort()
        raise
    return key, size


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    stream = await asyncio.to_thread(path.open, "rb")
    try:
        while chunk := await asyncio.to_thread(stream.read, _CHUNK):
            yield chunk
    finally:
        stream.close()


async def upload_file(blobs: BlobStore, path: Path) -> str:
    """Store the file at `path` as a new blob; returns its key."""
    key, _ = await upload_chunks(blobs, _file_chunks(path))
    return key


def _tar(source: Path, target: Path) -> None:
    with tarfile.open(target, "w") as archive:
        archive.add(source, arcname=".")


async def upload_dir(blobs: BlobStore, source: Path) -> str:
    """Store directory `source` as a tar blob; returns its key."""
    fd, name = tempfile.mkstemp(prefix=".tar-", dir=source.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        await asyncio.to_thread(_tar, source, tmp)
        return await upload_file(blobs, tmp)
    finally:
        await asyncio.to_thread(tmp.unlink, missing_ok=True)


async def download_file(blobs: BlobStore, key: str, target: Path) -> None:
    """Write blob `key` to `target` (through a temporary file renamed into place)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.part")
    stream = await asyncio.to_thread(tmp.open, "wb")
    try:
        async for chunk in blobs.open_reader(key):
            await asyncio.to_thread(stream.write, chunk)
        stream.close()
        os.replace(tmp, target)
    except BaseException:
        stream.close()
        tmp.unlink(missing_ok=True)
        raise


def _extract(archive_path: Path, target: Path) -> None:
    with tarfile.open(archive_path, "r") as archive:
        archive.extractall(target, filter="data")


async def download_dir(blobs: BlobStore, key: str, target: Path) -> None:
    """Extract tar blob `key` as directory `target` (atomically: extracted beside it, renamed).
    When `target` appears meanwhile (another task got there first) that copy is kept."""
    target.parent.mkdir(parents=True, exist_ok=True)
    archive = target.with_name(f".{target.name}.tar.part")
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        await download_file(blobs, key, archive)
        await asyncio.to_thread(_extract, archive, staging)
        try:
            os.rename(staging, target)
        except OSError:
            if not await asyncio.to_thread(target.is_dir):
                raise
    finally:
        archive.unlink(missing_ok=True)
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(staging)
