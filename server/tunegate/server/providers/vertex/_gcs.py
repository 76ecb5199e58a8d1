"""Google Cloud Storage for the Vertex AI provider: name validation and streamed resumable uploads.

Every name that ends up in a URL — bucket, region, project — is checked against Google's naming
rules first (`validate_bucket`, `validate_region`, `validate_project`), so a header value can
never rewrite the host or path; object names travel in the upload's JSON metadata, never in a
URL, and are still checked (`validate_object`) since they become a `gs://` URI Vertex reads.

`upload_stream` turns an async byte stream of unknown length into one GCS object through the JSON
API's resumable upload protocol, spoken by google-resumable-media's asyncio `ResumableUpload`
over aiohttp (the library builds every request, checks every answer and the object's CRC32C):
fixed-size chunks, one in memory at a time, and the upload session deleted on any failure so no
partial upload is left.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from google.resumable_media import common
from tunegate.server.errors import (
    DeadlineExceeded,
    InvalidArgument,
    PermissionDenied,
    ProviderUnreachable,
    TunegateError,
    Unauthenticated,
    UpstreamError,
    error_for_http_status,
)
from tunegate.server.providers._rechunk import Rechunker
from yarl import URL

with warnings.catch_warnings():
    # google-auth's aiohttp transport, which this module imports without using it, subclasses
    # aiohttp.ClientSession; aiohttp warns about that at import time.
    warnings.filterwarnings("ignore", "Inheritance class AuthorizedSession", DeprecationWarning)
    from google._async_resumable_media.requests import ResumableUpload

__all__ = [
    "CHUNK_QUANTUM",
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_ENDPOINT",
    "HEADER_BUCKET",
    "HEADER_OBJECT",
    "HEADER_PROJECT",
    "HEADER_REGION",
    "UploadStats",
    "upload_stream",
    "validate_bucket",
    "validate_object",
    "validate_project",
    "validate_region",
]

PROVIDER = "vertex-ai"
_log = logging.getLogger(__name__)

HEADER_BUCKET = "x-portkey-vertex-storage-bucket-name"
HEADER_REGION = "x-portkey-vertex-region"
HEADER_PROJECT = "x-portkey-vertex-project-id"
HEADER_OBJECT = "x-portkey-provider-file-name"

DEFAULT_ENDPOINT = "https://storage.googleapis.com"
KiB = 1 << 10
MiB = 1 << 20
CHUNK_QUANTUM = 256 * KiB
"""GCS takes resumable chunks in multiples of 256 KiB (all but the last)."""
DEFAULT_CHUNK_SIZE = 8 * MiB
MAX_CHUNK_SIZE = 256 * MiB
REQUEST_TIMEOUT = aiohttp.ClientTimeout(connect=10, sock_read=120)
"""Per request: seconds to connect, and without a byte from GCS (a chunk of several MiB included)."""
MAX_RETRIES = 3
"""Retries of one request on 429, 5xx or a dropped connection (google-resumable-media's backoff)."""

# ---------------------------------------------------------------------------------------------
# Names

# Bucket naming rules (cloud.google.com/storage/docs/buckets#naming): 3-63 characters, or up to
# 222 with dots and each dot-separated part at most 63; lower-case letters, digits, `-`, `_`, `.`;
# a letter or digit first and last; not an IP address; no `goog` prefix, no "google".
_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")
# Locations: `us-central1`, `europe-west4`, `northamerica-northeast1`, and `global`.
_REGION = re.compile(r"global|[a-z]{2,20}-[a-z]{2,20}[0-9]{1,2}")
# Project ids: 6-30 lower-case letters, digits and hyphens, a letter first, no trailing hyphen;
# legacy domain-scoped ids carry a domain prefix (`example.com:my-project`).
_PROJECT = re.compile(r"(?:[a-z0-9](?:[a-z0-9.-]{0,61}[a-z0-9])?:)?[a-z][a-z0-9-]{4,28}[a-z0-9]")
_MAX_OBJECT_BYTES = 1024
# Characters Google advises against in object names, and those that change a URI's meaning.
_OBJECT_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f#?\[\]*]")


def _refuse(param: str, what: str, value: str, rule: str) -> InvalidArgument:
    shown = value if len(value) <= 80 else value[:77] + "..."
    return InvalidArgument(f"Invalid {what} {shown!r} in '{param}': {rule}.", param=param)


def validate_bucket(bucket: str, *, param: str = HEADER_BUCKET) -> str:
    """`bucket` if it follows GCS's bucket naming rules, else an InvalidArgument naming `param`."""
    rule = (
        "3-63 lower-case letters, digits, '-', '_' and '.' (up to 222 with dot-separated parts of "
        "at most 63), beginning and ending with a letter or digit"
    )
    if (
        not _BUCKET.fullmatch(bucket)
        or ".." in bucket
        or any(len(part) > 63 for part in bucket.split("."))
        or ("." not in bucket and len(bucket) > 63)
    ):
        raise _refuse(param, "GCS bucket name", bucket, rule)
    if bucket.startswith("goog") or "google" in bucket or "g00gle" in bucket:
        raise _refuse(param, "GCS bucket name", bucket, "names with 'goog' or 'google' are reserved")
    try:
        ipaddress.ip_address(bucket)
    except ValueError:
        return bucket
    raise _refuse(param, "GCS bucket name", bucket, "a bucket name may not be an IP address")


def validate_object(name: str, *, param: str = HEADER_OBJECT) -> str:
    """`name` if it is an object name Vertex can read back from a `gs://` URI: 1-1024 bytes of
    UTF-8, slash-separated segments none empty, `.` or `..`, no control characters and none of
    ``#?[]*``; else an InvalidArgument naming `param`."""
    rule = (
        f"1-{_MAX_OBJECT_BYTES} bytes, slash-separated segments (none empty, '.' or '..'), "
        "no control characters and none of #?[]*"
    )
    try:
        size = len(name.encode())
    except UnicodeEncodeError:
        raise _refuse(param, "GCS object name", name, rule) from None
    if not 0 < size <= _MAX_OBJECT_BYTES or _OBJECT_FORBIDDEN.search(name):
        raise _refuse(param, "GCS object name", name, rule)
    if any(segment in ("", ".", "..") for segment in name.split("/")):
        raise _refuse(param, "GCS object name", name, rule)
    if name.startswith(".well-known/acme-challenge/"):
        raise _refuse(param, "GCS object name", name, "the prefix is reserved by Google")
    return name


def validate_region(region: str, *, param: str = HEADER_REGION) -> str:
    """`region` if it is a Vertex AI location (`us-central1`, `europe-west4`, `global`), else an
    InvalidArgument naming `param`."""
    if not _REGION.fullmatch(region):
        raise _refuse(
            param, "Vertex AI region", region, "expected a location such as 'us-central1' or 'global'"
        )
    return region


def validate_project(project_id: str, *, param: str = HEADER_PROJECT) -> str:
    """`project_id` if it is a Google Cloud project id (`my-project-123`, or a legacy
    domain-scoped `example.com:my-project`), else an InvalidArgument naming `param`."""
    if not _PROJECT.fullmatch(project_id):
        raise _refuse(
            param,
            "Google Cloud project id",
            project_id,
            "6-30 lower-case letters, digits and hyphens, beginning with a letter",
        )
    return project_id


def _upload_url(endpoint: str | None, bucket: str) -> str:
    base = URL(endpoint or DEFAULT_ENDPOINT)
    if (
        base.scheme not in ("http", "https")
        or not base.host
        or base.user
        or base.password
        or base.path not in ("", "/")
        or base.query_string
        or base.fragment
    ):
        raise ValueError(f"endpoint must be an http(s) origin such as {DEFAULT_ENDPOINT}")
    return str(base.with_path(f"/upload/storage/v1/b/{bucket}/o").with_query(uploadType="resumable"))


# ---------------------------------------------------------------------------------------------
# Upload


@dataclass
class UploadStats:
    """What an upload did: the chunk requests sent and the most payload bytes held at once."""

    chunks: int = 0
    buffered: int = 0
    max_buffered: int = 0


class _ChunkFeed:
    """The file-like stream `ResumableUpload` reads: it holds one chunk, filled from the async
    source before each request, and reports the absolute offset as its position."""

    def __init__(self, chunks: AsyncIterator[bytes], chunk_size: int, stats: UploadStats) -> None:
        self._source = Rechunker(chunks)
        self._chunk_size = chunk_size
        self._stats = stats
        self._ready = b""
        self._offset = 0
        self.source_error: BaseException | None = None
        """What the source raised, if it failed (re-raised to the caller as it is)."""

    async def fill(self) -> None:
        """Read the next chunk (exactly `chunk_size` bytes, fewer only at the end)."""
        pieces: list[memoryview] = []
        try:
            async for piece in self._source.take(self._chunk_size):
                pieces.append(piece)
        except BaseException as exc:
            self.source_error = exc
            raise
        filled = sum(len(piece) for piece in pieces)
        self._ready = b"".join(pieces)
        self._stats.buffered = filled
        self._stats.max_buffered = max(self._stats.max_buffered, filled)

    @property
    def offset(self) -> int:
        return self._offset

    def tell(self) -> int:
        return self._offset

    def read(self, size: int = -1) -> bytes:
        if size >= 0 and size < len(self._ready):
            raise ValueError("a read must take the whole chunk")  # never done by ResumableUpload
        data, self._ready = self._ready, b""
        self._offset += len(data)
        self._stats.buffered = 0
        return data


TokenSource = str | Callable[[], Awaitable[str]]


async def upload_stream(
    *,
    bucket: str,
    name: str,
    chunks: AsyncIterator[bytes],
    token: TokenSource,
    endpoint: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    content_type: str = "application/jsonl",
    session: aiohttp.ClientSession | None = None,
    max_retries: int = MAX_RETRIES,
    stats: UploadStats | None = None,
) -> tuple[str, int]:
    """Stream `chunks` into `gs://bucket/name`; returns that URI and the object's size in bytes.

    `token` is an access token, or an async callable giving one (asked before each request, so a
    cached token source can renew it during a long upload). `endpoint` replaces
    `https://storage.googleapis.com` (an emulator, Private Service Connect). The stream is sent
    as a resumable upload in chunks of exactly `chunk_size` bytes (a multiple of 256 KiB; the
    last may be shorter), one chunk held in memory at a time; the final answer's CRC32C is
    checked against the bytes sent.

    On any failure or cancellation after the session was opened, the session is deleted, so no
    object and no partial upload remain. GCS's refusals become `TunegateError`s (a missing bucket
    an InvalidArgument naming the bucket header); an exception raised by `chunks` itself is
    re-raised as it is.
    """
    validate_bucket(bucket)
    validate_object(name)
    if chunk_size <= 0 or chunk_size % CHUNK_QUANTUM or chunk_size > MAX_CHUNK_SIZE:
        raise ValueError(f"chunk_size must be a multiple of {CHUNK_QUANTUM} up to {MAX_CHUNK_SIZE} bytes")
    url = _upload_url(endpoint, bucket)
    uri = f"gs://{bucket}/{name}"
    stats = stats if stats is not None else UploadStats()
    feed = _ChunkFeed(chunks, chunk_size, stats)
    headers: dict[str, str] = {}

    async def authorize() -> None:
        headers["authorization"] = "Bearer " + (token if isinstance(token, str) else await token())

    # The library reads `headers` on every request (it keeps the dict it is given).
    upload = ResumableUpload(url, chunk_size, checksum="crc32c", headers=headers)
    upload._retry_strategy = common.RetryStrategy(max_retries=max_retries)  # type: ignore[no-untyped-call]
    own_session = session is None
    transport = session if session is not None else aiohttp.ClientSession()
    try:
        await feed.fill()  # a source that fails at once opens no session
        await authorize()
        try:
            await upload.initiate(
                transport, feed, {"name": name}, content_type, stream_final=False, timeout=REQUEST_TIMEOUT
            )
        except Exception as exc:
            raise await _gcs_error(exc, f"starting the upload of {uri}") from exc
        try:
            while True:
                await upload.transmit_next_chunk(transport, timeout=REQUEST_TIMEOUT)
                stats.chunks += 1
                if upload.finished:
                    break
                await feed.fill()
                await authorize()
        except BaseException as exc:
            await _cancel(transport, upload.resumable_url, uri)
            if isinstance(exc, Exception) and exc is not feed.source_error:
                raise await _gcs_error(exc, f"uploading {uri}") from exc
            raise
    finally:
        if own_session:
            await transport.close()
    return uri, feed.offset


async def _cancel(transport: aiohttp.ClientSession, session_uri: str | None, uri: str) -> None:
    """Delete the resumable session (GCS answers 499) so its bytes are dropped. Runs to the end
    even if the caller is cancelled meanwhile; a failure is logged (GCS expires sessions after a
    week)."""
    if session_uri is None:
        return

    async def run() -> None:
        try:
            async with transport.delete(session_uri, timeout=REQUEST_TIMEOUT) as answer:
                if answer.status not in (204, 499, 404, 410):
                    _log.warning("deleting the upload session of %s answered %s", uri, answer.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            _log.warning("could not delete the upload session of %s: %s", uri, exc)

    cleanup = asyncio.ensure_future(run())
    try:
        await asyncio.shield(cleanup)
    except asyncio.CancelledError:
        await cleanup
        raise


async def _gcs_error(exc: BaseException, doing: str) -> TunegateError:
    """The gateway error for a failure of GCS (or of reaching it) while `doing` something."""
    err: TunegateError
    if isinstance(exc, TunegateError):
        return exc
    if isinstance(exc, common.InvalidResponse):
        status, message = await _answer(exc.response)
        text = f"GCS refused {doing}: {status} {message}"
        if status == 404:
            err = InvalidArgument(text, code="bucket_not_found", param=HEADER_BUCKET, http_status=400)
        elif status == 401:
            err = Unauthenticated(text, code="gcs_unauthenticated")
        elif status == 403:
            err = PermissionDenied(text, code="gcs_permission_denied", param=HEADER_BUCKET)
        else:
            err = error_for_http_status(status, text, param=HEADER_BUCKET if status < 500 else None)
    elif isinstance(exc, common.DataCorruption):
        err = UpstreamError(f"GCS stored different bytes while {doing}: {exc}", code="checksum_mismatch")
    elif isinstance(exc, aiohttp.ClientConnectionError | ConnectionError):
        err = ProviderUnreachable(f"GCS could not be reached while {doing}: {exc}")
    elif isinstance(exc, TimeoutError):
        err = DeadlineExceeded(f"GCS did not answer in time while {doing}")
    else:
        err = UpstreamError(f"GCS failed while {doing}: {exc}")
    err.provider = PROVIDER
    return err


async def _answer(response: Any) -> tuple[int, str]:
    """Status and GCS's error message of a failed aiohttp response (its body is read here)."""
    status = int(getattr(response, "status", 0) or 0)
    try:
        body = await response.json(content_type=None)
        message = str(body["error"]["message"])
    except Exception:
        try:
            message = (await response.text())[:300]
        except Exception:
            message = ""
    finally:
        response.release()
    return status, message or "(no message)"
