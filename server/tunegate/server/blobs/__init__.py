"""Blob storage: the bytes of files and upload parts, addressed by opaque keys.

`BlobStore` is the interface, `BlobWriter` one blob being written. `LocalBlobStore` keeps blobs
on local disk (one process owns its directory); `S3BlobStore` in an S3-compatible bucket shared
by every replica. `open_blob_store(BlobSettings, data_dir)` picks one from the `[blobs]` config
section; `close_blob_store` releases it. Keys come from `new_blob_key()`, never from user input.
"""

from __future__ import annotations

from pathlib import Path

from tunegate.server.blobs._local import (
    DEFAULT_CHUNK_SIZE,
    STAGE_BYTES,
    WRITEBACK_BYTES,
    BlobStore,
    BlobWriter,
    LocalBlobStore,
    new_blob_key,
)
from tunegate.server.blobs._s3 import S3BlobStore
from tunegate.server.blobs._settings import DEFAULT_PART_BYTES, MIN_PART_BYTES, BlobSettings

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_PART_BYTES",
    "MIN_PART_BYTES",
    "STAGE_BYTES",
    "WRITEBACK_BYTES",
    "BlobSettings",
    "BlobStore",
    "BlobWriter",
    "LocalBlobStore",
    "S3BlobStore",
    "close_blob_store",
    "new_blob_key",
    "open_blob_store",
]


def open_blob_store(settings: BlobSettings, data_dir: Path) -> BlobStore:
    """The store `settings` name: `LocalBlobStore(data_dir)` without a url, else `S3BlobStore`
    (which connects on first use). Close it with `close_blob_store`."""
    if settings.url is None:
        return LocalBlobStore(data_dir)
    return S3BlobStore(settings)


async def close_blob_store(store: BlobStore) -> None:
    """Release what `store` holds (the S3 client); nothing for a local store."""
    if isinstance(store, S3BlobStore):
        await store.aclose()
