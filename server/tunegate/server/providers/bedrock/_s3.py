"""S3 (and STS) for the Bedrock provider: name validation, clients, streamed multipart uploads.

Every name that ends up in a URL — region, bucket, object key — is checked against AWS's
documented patterns first (`validate_region`, `validate_bucket`, `validate_key`), so a header
value can never rewrite the host or path. The clients come from aiobotocore (signing, retries in
botocore's standard mode, timeouts); `upload_stream` turns an async byte stream into one S3
object through a multipart upload with fixed-size parts, a bounded number of parts in flight and
an abort on any failure, so no parts are left behind.
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from tunegate.server.errors import (
    DeadlineExceeded,
    InvalidArgument,
    ProviderUnreachable,
    TunegateError,
    UpstreamError,
    error_for_http_status,
)
from tunegate.server.providers._rechunk import Rechunker

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef
    from types_aiobotocore_sts import STSClient

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_PART_SIZE",
    "HEADER_ACCESS_KEY_ID",
    "HEADER_BUCKET",
    "HEADER_EXTERNAL_ID",
    "HEADER_KEY",
    "HEADER_KMS_KEY_ID",
    "HEADER_REGION",
    "HEADER_ROLE_ARN",
    "HEADER_SECRET_ACCESS_KEY",
    "HEADER_SSE",
    "MAX_CONCURRENCY",
    "MAX_PARTS",
    "MIN_PART_SIZE",
    "AwsCredentials",
    "ServerSideEncryption",
    "UploadStats",
    "assume_role",
    "s3_client",
    "sts_client",
    "upload_stream",
    "validate_bucket",
    "validate_key",
    "validate_region",
]

PROVIDER = "bedrock"
_log = logging.getLogger(__name__)

# Portkey's header names: they are the `param` of every error about the value they carry.
HEADER_ACCESS_KEY_ID = "x-portkey-aws-access-key-id"
HEADER_SECRET_ACCESS_KEY = "x-portkey-aws-secret-access-key"
HEADER_REGION = "x-portkey-aws-region"
HEADER_BUCKET = "x-portkey-aws-s3-bucket"
HEADER_KEY = "x-portkey-aws-s3-object-key"
HEADER_ROLE_ARN = "x-portkey-aws-role-arn"
HEADER_EXTERNAL_ID = "x-portkey-aws-external-id"
HEADER_SSE = "x-portkey-amz-server-side-encryption"
HEADER_KMS_KEY_ID = "x-portkey-amz-server-side-encryption-aws-kms-key-id"

MiB = 1 << 20
MIN_PART_SIZE = 5 * MiB
"""S3 refuses parts under 5 MiB, except the last."""
MAX_PART_SIZE = 5 * 1024 * MiB
MAX_PARTS = 10_000
DEFAULT_PART_SIZE = 8 * MiB
DEFAULT_CONCURRENCY = 3
MAX_CONCURRENCY = 16

# ---------------------------------------------------------------------------------------------
# Names

# Commercial, GovCloud, China and ISO partitions: `us-east-1`, `us-gov-west-1`, `cn-north-1`,
# `us-isob-east-1`, `eu-isoe-west-1`. Lower-case letters, hyphens, a trailing number.
_REGION = re.compile(r"[a-z]{2}(?:-[a-z]+){1,3}-[0-9]{1,2}")
# General purpose bucket naming rules (S3 user guide, "Bucket naming rules").
_BUCKET = re.compile(r"[a-z0-9](?:[a-z0-9.-]{1,61})[a-z0-9]")
_BUCKET_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_BUCKET_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")
# A key segment as Bedrock's `S3Uri` pattern allows it (botocore's bedrock service model):
# S3's "safe characters". Segments are joined by single slashes; `.` and `..` are refused.
_KEY_SEGMENT = re.compile(r"[-!_*'().a-zA-Z0-9]+")
_MAX_KEY_BYTES = 1024
_ROLE_ARN = re.compile(r"arn:aws(?:-[a-z]+)*:iam::[0-9]{12}:role/[\w+=,.@/-]{1,512}")
_EXTERNAL_ID = re.compile(r"[\w+=,.@:/-]{2,1224}")
# KMS key: id, alias or ARN of either (the pattern of botocore's bedrock `KmsKeyId`).
_KMS_KEY = re.compile(
    r"arn:aws(?:-[a-z]+)*:kms:[a-z0-9-]+:[0-9]{12}:(?:key/[a-zA-Z0-9-]{36}|alias/[a-zA-Z0-9/_-]+)"
    r"|[a-zA-Z0-9-]{36}|alias/[a-zA-Z0-9/_-]+"
)


def _refuse(param: str, what: str, value: str, rule: str) -> InvalidArgument:
    shown = value if len(value) <= 80 else value[:77] + "..."
    return InvalidArgument(f"Invalid {what} {shown!r} in '{param}': {rule}.", param=param)


def validate_region(region: str, *, param: str = HEADER_REGION) -> str:
    """`region` if it is an AWS region name (`us-east-1`), else an InvalidArgument naming `param`."""
    if not _REGION.fullmatch(region):
        raise _refuse(param, "AWS region", region, "expected a region name such as 'us-east-1'")
    return region


def validate_bucket(bucket: str, *, param: str = HEADER_BUCKET) -> str:
    """`bucket` if it follows S3's general purpose bucket naming rules, else an InvalidArgument."""
    if not _BUCKET.fullmatch(bucket) or ".." in bucket or ".-" in bucket or "-." in bucket:
        raise _refuse(
            param,
            "S3 bucket name",
            bucket,
            "3-63 lower-case letters, digits, dots and hyphens, beginning and ending with a letter or digit",
        )
    if bucket.startswith(_BUCKET_PREFIXES) or bucket.endswith(_BUCKET_SUFFIXES):
        raise _refuse(param, "S3 bucket name", bucket, "the prefix or suffix is reserved by AWS")
    try:
        ipaddress.IPv4Address(bucket)
    except ValueError:
        return bucket
    raise _refuse(param, "S3 bucket name", bucket, "a bucket name may not be an IP address")


def validate_key(key: str, *, param: str = HEADER_KEY, prefix: bool = False) -> str:
    """`key` if it is an object key Bedrock can read (`S3Uri`'s pattern: slash-separated segments
    of letters, digits and ``-!_*'().``, at most 1024 bytes), else an InvalidArgument. With
    `prefix`, one trailing slash is allowed (a key prefix such as ``training/``)."""
    body = key[:-1] if prefix and key.endswith("/") else key
    rule = (
        "slash-separated segments of letters, digits and -!_*'(). (no empty, '.' or '..' segment, "
        f"at most {_MAX_KEY_BYTES} bytes)"
    )
    if not body or len(key.encode()) > _MAX_KEY_BYTES:
        raise _refuse(param, "S3 object key", key, rule)
    for segment in body.split("/"):
        if segment in (".", "..") or not _KEY_SEGMENT.fullmatch(segment):
            raise _refuse(param, "S3 object key", key, rule)
    return key


# ---------------------------------------------------------------------------------------------
# Credentials, encryption, clients


@dataclass(frozen=True)
class AwsCredentials:
    """Static or temporary AWS credentials. The secret parts never appear in `repr`."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    expiration: datetime | None = None
    """When temporary credentials (from STS) stop working; None for long-term keys."""

    def __post_init__(self) -> None:
        if not self.access_key_id:
            raise InvalidArgument("The AWS access key id is missing.", param=HEADER_ACCESS_KEY_ID)
        if not self.secret_access_key:
            raise InvalidArgument("The AWS secret access key is missing.", param=HEADER_SECRET_ACCESS_KEY)


@dataclass(frozen=True)
class ServerSideEncryption:
    """S3 server-side encryption for every object the gateway writes: `AES256` (SSE-S3) or
    `aws:kms` (SSE-KMS, with the bucket's default key unless `kms_key_id` names one)."""

    algorithm: Literal["AES256", "aws:kms"]
    kms_key_id: str | None = None

    @classmethod
    def parse(cls, algorithm: str | None, kms_key_id: str | None = None) -> ServerSideEncryption | None:
        """From Portkey's `x-portkey-amz-server-side-encryption` and its KMS key id header; None
        when neither is given. A KMS key implies `aws:kms`."""
        if not algorithm and not kms_key_id:
            return None
        if kms_key_id and not _KMS_KEY.fullmatch(kms_key_id):
            raise _refuse(HEADER_KMS_KEY_ID, "KMS key id", kms_key_id, "expected a key id, alias or ARN")
        if not algorithm:
            return cls("aws:kms", kms_key_id)
        if algorithm == "AES256":
            if kms_key_id:
                raise InvalidArgument(
                    f"'{HEADER_KMS_KEY_ID}' needs '{HEADER_SSE}: aws:kms', not 'AES256'.",
                    param=HEADER_KMS_KEY_ID,
                )
            return cls("AES256")
        if algorithm == "aws:kms":
            return cls("aws:kms", kms_key_id or None)
        raise _refuse(HEADER_SSE, "server-side encryption", algorithm, "expected 'aws:kms' or 'AES256'")

    def request_params(self) -> dict[str, str]:
        """The `ServerSideEncryption` / `SSEKMSKeyId` parameters of PutObject and
        CreateMultipartUpload."""
        params: dict[str, str] = {"ServerSideEncryption": self.algorithm}
        if self.kms_key_id:
            params["SSEKMSKeyId"] = self.kms_key_id
        return params


CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 120.0
"""Seconds without a byte from AWS before a request is retried (a part of several MiB included)."""
MAX_ATTEMPTS = 5
"""botocore's standard retry mode: throttling, 5xx and connection errors, with jittered backoff."""

_session: AioSession | None = None


def _get_session() -> AioSession:
    """One botocore session per process: it loads the service models once."""
    global _session
    if _session is None:
        _session = get_session()
    return _session


def _config(*, path_style: bool, max_pool_connections: int, max_attempts: int) -> AioConfig:
    return AioConfig(
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        retries={"mode": "standard", "max_attempts": max_attempts},
        max_pool_connections=max_pool_connections,
        s3={"addressing_style": "path"} if path_style else None,
    )


@asynccontextmanager
async def s3_client(
    credentials: AwsCredentials,
    *,
    region: str,
    endpoint_url: str | None = None,
    max_pool_connections: int = 10,
    max_attempts: int = MAX_ATTEMPTS,
) -> AsyncIterator[S3Client]:
    """An aiobotocore S3 client signing with `credentials` in `region`. With `endpoint_url` (a
    custom host or a local emulator) buckets are addressed path-style."""
    validate_region(region)
    async with _get_session().create_client(
        "s3",
        region_name=region,
        endpoint_url=endpoint_url,
        aws_access_key_id=credentials.access_key_id,
        aws_secret_access_key=credentials.secret_access_key,
        aws_session_token=credentials.session_token,
        config=_config(
            path_style=endpoint_url is not None,
            max_pool_connections=max_pool_connections,
            max_attempts=max_attempts,
        ),
    ) as client:
        yield client


@asynccontextmanager
async def sts_client(
    credentials: AwsCredentials | None, *, region: str, endpoint_url: str | None = None
) -> AsyncIterator[STSClient]:
    """An aiobotocore STS client (the regional endpoint of `region`, or `endpoint_url`), signing
    with `credentials` or, when None, botocore's default chain (environment, profile, instance
    role)."""
    validate_region(region)
    async with _get_session().create_client(
        "sts",
        region_name=region,
        endpoint_url=endpoint_url,
        aws_access_key_id=credentials.access_key_id if credentials else None,
        aws_secret_access_key=credentials.secret_access_key if credentials else None,
        aws_session_token=credentials.session_token if credentials else None,
        config=_config(path_style=False, max_pool_connections=2, max_attempts=MAX_ATTEMPTS),
    ) as client:
        yield client


async def assume_role(
    credentials: AwsCredentials | None,
    *,
    region: str,
    role_arn: str,
    external_id: str | None = None,
    session_name: str = "tunegate",
    duration_seconds: int = 3600,
    endpoint_url: str | None = None,
) -> AwsCredentials:
    """Temporary credentials for `role_arn` (STS AssumeRole with `external_id`), signed with
    `credentials` (None: the default chain). STS's refusals keep their status, with the role named."""
    if not _ROLE_ARN.fullmatch(role_arn):
        raise _refuse(
            HEADER_ROLE_ARN, "IAM role ARN", role_arn, "expected arn:aws:iam::<account>:role/<name>"
        )
    if external_id is not None and not _EXTERNAL_ID.fullmatch(external_id):
        raise _refuse(HEADER_EXTERNAL_ID, "external id", external_id, "2-1224 letters, digits and +=,.@:/-")
    kwargs: dict[str, Any] = {
        "RoleArn": role_arn,
        "RoleSessionName": session_name,
        "DurationSeconds": duration_seconds,
    }
    if external_id is not None:
        kwargs["ExternalId"] = external_id
    try:
        async with sts_client(credentials, region=region, endpoint_url=endpoint_url) as sts:
            answer = await sts.assume_role(**kwargs)
    except (ClientError, BotoCoreError) as exc:
        raise _aws_error(exc, f"assuming the role '{role_arn}'", param=HEADER_ROLE_ARN) from exc
    creds = answer["Credentials"]
    return AwsCredentials(
        creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"], creds["Expiration"]
    )


# ---------------------------------------------------------------------------------------------
# Errors

# S3 error codes that mean the request's own bucket, key or encryption settings are wrong: a 400
# naming the header that carried them, whatever status S3 used.
_BUCKET_CODES = frozenset(
    {"NoSuchBucket", "InvalidBucketName", "PermanentRedirect", "AuthorizationHeaderMalformed"}
)
_KMS_CODES = frozenset({"KMS.NotFoundException", "KMS.DisabledException", "KMS.KMSInvalidStateException"})


def _aws_error(exc: BaseException, doing: str, *, param: str | None = None) -> TunegateError:
    """The gateway error for a botocore failure while `doing` something."""
    err: TunegateError
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = error.get("Code") or "Unknown"
        message = error.get("Message") or code
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 500
        text = f"AWS refused {doing}: {code}: {message}"
        if code in _BUCKET_CODES:
            err = InvalidArgument(text, code=_snake(code), param=HEADER_BUCKET, http_status=400)
        elif code in _KMS_CODES:
            err = InvalidArgument(text, code="kms_key_invalid", param=HEADER_KMS_KEY_ID, http_status=400)
        else:
            err = error_for_http_status(status, text, code=code, param=param if status < 500 else None)
    elif isinstance(exc, EndpointConnectionError | ConnectTimeoutError):
        err = ProviderUnreachable(f"AWS could not be reached while {doing}: {exc}")
    elif isinstance(exc, ReadTimeoutError):
        err = DeadlineExceeded(f"AWS did not answer in time while {doing}: {exc}")
    else:
        err = UpstreamError(f"AWS failed while {doing}: {exc}")
    err.provider = PROVIDER
    return err


def _snake(code: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", code).lower()


# ---------------------------------------------------------------------------------------------
# Upload


@dataclass
class UploadStats:
    """What an upload did; `max_buffered` is the most payload bytes it held at once (parts in
    flight plus the part being filled)."""

    parts: int = 0
    buffered: int = 0
    max_buffered: int = 0
    multipart: bool = False

    def _hold(self, n: int) -> None:
        self.buffered += n
        self.max_buffered = max(self.max_buffered, self.buffered)


class _Part:
    """One part's bytes, written into a buffer the part owns (so a transport that asks for the
    buffer — aiohttp calls `getbuffer()` — gets it without a copy) and sent from it (botocore
    rewinds it for a retry)."""

    __slots__ = ("body", "size")

    def __init__(self) -> None:
        self.body = io.BytesIO()
        self.size = 0

    def write(self, piece: memoryview) -> None:
        self.body.write(piece)
        self.size += len(piece)

    def rewound(self) -> io.BytesIO:
        self.body.seek(0)
        return self.body


class _PartReader:
    """Cuts an async byte stream into parts of exactly `size` bytes (the last may be shorter)."""

    def __init__(self, chunks: AsyncIterator[bytes], size: int, stats: UploadStats) -> None:
        self._source = Rechunker(chunks)
        self._size = size
        self._stats = stats

    async def next_part(self) -> _Part | None:
        """The next part, or None at the end. The stats count its bytes as held."""
        part = _Part()
        async for piece in self._source.take(self._size):
            part.write(piece)
            self._stats._hold(len(piece))
        return part if part.size else None


async def upload_stream(
    client: S3Client,
    *,
    bucket: str,
    key: str,
    chunks: AsyncIterator[bytes],
    part_size: int = DEFAULT_PART_SIZE,
    concurrency: int = DEFAULT_CONCURRENCY,
    sse: ServerSideEncryption | None = None,
    content_type: str = "application/jsonl",
    stats: UploadStats | None = None,
) -> tuple[str, int]:
    """Stream `chunks` into `s3://bucket/key`; returns the object's ETag and size in bytes.

    The stream is cut into parts of exactly `part_size` bytes (≥ 5 MiB; the last part may be
    smaller) sent as a multipart upload with at most `concurrency` parts in flight; reading
    pauses while that many are in flight, so the upload holds at most `concurrency + 1` parts.
    A stream shorter than one part is sent with a single PutObject. Every write carries `sse`.

    On any failure or cancellation the multipart upload is aborted (after the parts in flight
    have ended) so no parts are left. S3's errors become `TunegateError`s naming the bucket; an
    exception raised by `chunks` itself is re-raised as it is.
    """
    validate_bucket(bucket)
    validate_key(key)
    if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
        raise ValueError(f"part_size must be between {MIN_PART_SIZE} and {MAX_PART_SIZE} bytes")
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise ValueError(f"concurrency must be between 1 and {MAX_CONCURRENCY}")
    stats = stats if stats is not None else UploadStats()
    where = f"s3://{bucket}/{key}"
    extra: dict[str, Any] = {"ContentType": content_type, **(sse.request_params() if sse else {})}
    reader = _PartReader(chunks, part_size, stats)

    first = await reader.next_part()
    if first is None or first.size < part_size:
        body = first or _Part()
        try:
            answer = await client.put_object(Bucket=bucket, Key=key, Body=body.rewound(), **extra)
        except (ClientError, BotoCoreError) as exc:
            raise _aws_error(exc, f"writing {where}", param=HEADER_BUCKET) from exc
        stats.parts = 1
        stats.buffered -= body.size
        return answer["ETag"], body.size

    try:
        created = await client.create_multipart_upload(
            Bucket=bucket, Key=key, ChecksumAlgorithm="CRC32", **extra
        )
    except (ClientError, BotoCoreError) as exc:
        raise _aws_error(exc, f"starting the upload of {where}", param=HEADER_BUCKET) from exc
    upload_id = created["UploadId"]
    stats.multipart = True
    slots = asyncio.Semaphore(concurrency)
    tasks: list[asyncio.Task[CompletedPartTypeDef]] = []

    async def send(number: int, body: _Part) -> CompletedPartTypeDef:
        try:
            answer = await client.upload_part(
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                # A file body is sent in pieces (the transport never buffers a whole part again)
                # and is rewound by botocore for a retry.
                Body=body.rewound(),
                ChecksumAlgorithm="CRC32",
            )
        finally:
            stats.buffered -= body.size
            slots.release()
        return {"PartNumber": number, "ETag": answer["ETag"], "ChecksumCRC32": answer["ChecksumCRC32"]}

    size = 0
    try:
        part: _Part | None = first
        first = None
        while part is not None:
            if len(tasks) >= MAX_PARTS:
                raise InvalidArgument(
                    f"The file is too large for {where}: more than {MAX_PARTS} parts of {part_size} "
                    "bytes; configure a larger part size."
                )
            await slots.acquire()
            for task in tasks:  # fail fast: a part that failed stops the reading
                if task.done() and task.exception() is not None:
                    await task
            size += part.size
            tasks.append(asyncio.create_task(send(len(tasks) + 1, part)))
            part = None  # the task holds the bytes now
            part = await reader.next_part()
        parts = list(await asyncio.gather(*tasks))
        stats.parts = len(parts)
        done = await client.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
    except BaseException as exc:
        await _abort(client, bucket, key, upload_id, tasks)
        if isinstance(exc, ClientError | BotoCoreError):
            raise _aws_error(exc, f"uploading {where}", param=HEADER_BUCKET) from exc
        raise
    return done["ETag"], size


async def _abort(
    client: S3Client, bucket: str, key: str, upload_id: str, tasks: list[asyncio.Task[CompletedPartTypeDef]]
) -> None:
    """Stop the parts in flight, then abort the upload (S3 drops the parts it holds). Runs to the
    end even if the caller is cancelled meanwhile."""

    async def run() -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        except (ClientError, BotoCoreError) as exc:
            # The bucket's lifecycle rule for incomplete uploads is then the last resort.
            _log.warning("could not abort the upload %s of s3://%s/%s: %s", upload_id, bucket, key, exc)

    cleanup = asyncio.ensure_future(run())
    try:
        await asyncio.shield(cleanup)
    except asyncio.CancelledError:
        await cleanup
        raise
