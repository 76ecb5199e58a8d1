"""Typed rows: what the repositories return."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class FileRecord:
    """One row of `files`. `purpose` and `status` are OpenAI wire strings."""

    id: str
    owner: str
    filename: str
    purpose: str
    bytes: int
    content_type: str
    status: str
    created_at: int
    blob_key: str
    expires_at: int | None = None
    status_details: str | None = None
    deleted_at: int | None = None
    request_id: str | None = None
    seq: int | None = None  # assigned by the database on insert

    def visible_at(self, now: int) -> bool:
        """Neither deleted nor expired at `now` (Unix seconds)."""
        return self.deleted_at is None and (self.expires_at is None or self.expires_at > now)


@dataclass(frozen=True, slots=True)
class UploadRecord:
    """One row of `uploads`. `status` is the stored state; expiry is applied by the domain."""

    id: str
    owner: str
    filename: str
    purpose: str
    bytes: int
    mime_type: str
    status: str
    created_at: int
    expires_at: int
    file_expires_after: int | None = None
    file_id: str | None = None
    request_id: str | None = None
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class UploadPartRecord:
    """One row of `upload_parts`."""

    id: str
    upload_id: str
    bytes: int
    blob_key: str
    created_at: int
    seq: int | None = None


def row_values(record: Any) -> dict[str, Any]:
    """A record's columns for an INSERT, without the database-assigned `seq`."""
    return {name: getattr(record, name) for name in record.__slots__ if name != "seq"}


@dataclass(frozen=True, slots=True)
class JobRecord:
    """One row of `jobs`, its JSON columns decoded.

    `state` is the registry's creation state (`intent`, `created`, `failed_to_create`,
    `failed`; see `tunegate.server.jobs`); `status` OpenAI's job status as last seen. `request` is the
    create body as OpenAI JSON with the caller's file ids; `snapshot` the latest job object
    rendered with gateway ids (None while an intent); `error` a stored creation error;
    `cancel_requested` a cancel asked for while an intent, carried out once the job is found."""

    id: str
    owner: str
    provider: str
    account_key: str
    state: str
    status: str
    request: dict[str, Any]
    request_hash: str
    created_at: int
    updated_at: int
    region: str | None = None
    native_id: str | None = None
    request_id: str | None = None
    metadata: dict[str, str] | None = None
    snapshot: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    attempted: bool = False
    lease_until: int | None = None
    cancel_requested: bool = False
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class MirroredRecord:
    """One row of `job_events` or `job_checkpoints`: a provider item kept under a gateway id.
    `body` is the provider's OpenAI-shaped JSON (native ids inside)."""

    id: str
    job_id: str
    native_id: str
    created_at: int
    body: dict[str, Any]
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class ProviderFileRecord:
    """One row of `provider_files`: where a gateway file lives at a provider account.
    `status` is OpenAI's file status at the provider (`uploaded`, `processed`, `error`)."""

    file_id: str
    account_key: str
    provider: str
    native_id: str
    status: str
    created_at: int
    status_details: str | None = None


@dataclass(frozen=True, slots=True)
class WebhookEndpointRecord:
    """One row of `webhook_endpoints`, its secret unsealed (`whsec_…`)."""

    id: str
    owner: str
    url: str
    events: tuple[str, ...]
    secret: str
    created_at: int
    deleted_at: int | None = None
    seq: int | None = None  # assigned by the database on insert


@dataclass(frozen=True, slots=True)
class WebhookDeliveryRecord:
    """One row of `webhook_deliveries` (the delivery log). `status` is `pending`, `delivered`
    or `failed`; `payload` is the exact JSON body every attempt sends."""

    id: str
    event_id: str
    endpoint_id: str
    owner: str
    job_id: str
    type: str
    payload: str
    attempts: int
    next_attempt_at: float
    status: str
    created_at: int
    last_error: str | None = None
    delivered_at: int | None = None


@dataclass(frozen=True, slots=True)
class DueDelivery:
    """A pending delivery with what sending it needs: its endpoint's URL and unsealed secret,
    and whether the endpoint has been deleted since the event was enqueued."""

    delivery: WebhookDeliveryRecord
    url: str
    secret: str
    endpoint_deleted: bool
