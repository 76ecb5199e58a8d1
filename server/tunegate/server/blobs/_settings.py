"""`BlobSettings`: where the gateway keeps blob bytes (local disk, or an S3-compatible bucket)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["DEFAULT_PART_BYTES", "MIN_PART_BYTES", "BlobSettings"]

MIN_PART_BYTES = 5 * 1024 * 1024
"""S3's smallest multipart part (all but the last)."""
DEFAULT_PART_BYTES = 8 * 1024 * 1024
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_PREFIX = re.compile(r"[A-Za-z0-9!_.*'()/-]*")


@dataclass(frozen=True)
class BlobSettings:
    """The `[blobs]` config section, validated when built (`ValueError`).

    `url`: None keeps blobs on local disk under the data directory; `s3://bucket/prefix` keeps
    them in that bucket, each blob at `<prefix>/<key>` (the prefix may be empty). `endpoint_url`
    names an S3-compatible service (MinIO, moto, ...; buckets then addressed path-style),
    `region` its region. `part_bytes` is the multipart part size (at least 5 MiB); at most
    `max_concurrency` parts of one blob are uploaded at once. Credentials come from botocore's
    default chain (environment, profile, instance metadata), never from this file."""

    url: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    part_bytes: int = DEFAULT_PART_BYTES
    max_concurrency: int = 2

    def __post_init__(self) -> None:
        if self.url is not None:
            self._parse()
        if self.endpoint_url is not None:
            parts = urlsplit(self.endpoint_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"blobs endpoint_url must be an http(s) URL, got {self.endpoint_url!r}")
        if self.region is not None and not re.fullmatch(r"[a-z0-9-]{1,32}", self.region):
            raise ValueError(f"invalid blobs region {self.region!r}")
        if isinstance(self.part_bytes, bool) or not isinstance(self.part_bytes, int):
            raise ValueError("blobs part_bytes must be an integer")
        if self.part_bytes < MIN_PART_BYTES:
            raise ValueError(f"blobs part_bytes must be at least {MIN_PART_BYTES} (5 MiB)")
        if isinstance(self.max_concurrency, bool) or not isinstance(self.max_concurrency, int):
            raise ValueError("blobs max_concurrency must be an integer")
        if not 1 <= self.max_concurrency <= 16:
            raise ValueError("blobs max_concurrency must be 1-16")

    def _parse(self) -> tuple[str, str]:
        assert self.url is not None
        parts = urlsplit(self.url)
        if parts.scheme != "s3" or parts.query or parts.fragment:
            raise ValueError(f"blobs url must look like s3://bucket/prefix, got {self.url!r}")
        if not _BUCKET.fullmatch(parts.netloc):
            raise ValueError(f"invalid bucket name {parts.netloc!r} in blobs url")
        prefix = parts.path.strip("/")
        if not _PREFIX.fullmatch(prefix) or "//" in prefix:
            raise ValueError(f"invalid key prefix {prefix!r} in blobs url")
        return parts.netloc, prefix

    @property
    def bucket(self) -> str:
        """The bucket of an `s3://` url; `ValueError` for local disk."""
        if self.url is None:
            raise ValueError("blobs are on local disk")
        return self._parse()[0]

    @property
    def prefix(self) -> str:
        """The key prefix of an `s3://` url, without surrounding slashes ('' for none)."""
        if self.url is None:
            raise ValueError("blobs are on local disk")
        return self._parse()[1]
