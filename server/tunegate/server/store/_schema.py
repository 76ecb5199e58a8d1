"""Table definitions for SQLAlchemy Core queries.

The DDL that creates them lives in `migrations/versions/`; the two must agree (a test checks that
the migrated database matches this metadata's columns).
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

# SQLite only auto-increments an INTEGER PRIMARY KEY (the rowid alias); PostgreSQL gets BIGINT.
Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# `seq` is the insertion order and the stable pagination key; `id` is the public, random id.
# Soft delete: a deleted file keeps its row (deleted_at set, blob removed) so its id still works
# as a list cursor.
files = sa.Table(
    "files",
    metadata,
    sa.Column("seq", Seq, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("owner", sa.String(64), nullable=False),
    sa.Column("filename", sa.String(512), nullable=False),
    sa.Column("purpose", sa.String(32), nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("content_type", sa.String(255), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("status_details", sa.Text, nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.BigInteger, nullable=True),
    sa.Column("deleted_at", sa.BigInteger, nullable=True),
    sa.Column("blob_key", sa.String(128), nullable=False),
    sa.Column("request_id", sa.String(255), nullable=True),
    sa.Index("ix_files_owner_seq", "owner", "seq"),
    sa.Index("ix_files_owner_request_id", "owner", "request_id", unique=True),
    sa.Index("ix_files_expires_at", "expires_at"),
)

uploads = sa.Table(
    "uploads",
    metadata,
    sa.Column("seq", Seq, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("owner", sa.String(64), nullable=False),
    sa.Column("filename", sa.String(512), nullable=False),
    sa.Column("purpose", sa.String(32), nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("mime_type", sa.String(255), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.BigInteger, nullable=False),
    # The expiry policy of the file the upload produces (seconds after its creation).
    sa.Column("file_expires_after", sa.BigInteger, nullable=True),
    sa.Column("file_id", sa.String(64), nullable=True),
    sa.Column("request_id", sa.String(255), nullable=True),
    sa.Index("ix_uploads_owner_request_id", "owner", "request_id", unique=True),
    sa.Index("ix_uploads_status_expires_at", "status", "expires_at"),
)

upload_parts = sa.Table(
    "upload_parts",
    metadata,
    sa.Column("seq", Seq, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("upload_id", sa.String(64), sa.ForeignKey("uploads.id", ondelete="CASCADE"), nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("blob_key", sa.String(128), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Index("ix_upload_parts_upload_id", "upload_id"),
)

_HAS_REQUEST_ID = sa.text("request_id IS NOT NULL")
_HAS_NATIVE_ID = sa.text("native_id IS NOT NULL")
ACTIVE_JOBS = "state = 'created' AND status NOT IN ('succeeded', 'failed', 'cancelled')"
"""Created and not finished: the jobs the monitor may follow (a partial index's predicate)."""
_ACTIVE = sa.text(ACTIVE_JOBS)

# Fine-tuning jobs (server.jobs). `state` is the registry's own creation state machine
# (intent → created | failed_to_create | failed); `status` is OpenAI's job status as last seen.
# `request` is the create body as OpenAI JSON (user's file ids), kept to re-render intents and
# for reconciliation; `snapshot` is the latest job object rendered with gateway ids.
jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("seq", Seq, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("owner", sa.String(64), nullable=False),
    sa.Column("provider", sa.String(64), nullable=False),
    sa.Column("account_key", sa.String(255), nullable=False),
    sa.Column("region", sa.String(64), nullable=True),
    sa.Column("native_id", sa.String(255), nullable=True),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("request", sa.Text, nullable=False),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("request_id", sa.String(255), nullable=True),
    sa.Column("metadata", sa.Text, nullable=True),
    sa.Column("snapshot", sa.Text, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("attempted", sa.Boolean, nullable=False, default=False),
    sa.Column("lease_until", sa.BigInteger, nullable=True),
    # Migration 0006: a cancel asked for before the provider confirmed the job.
    sa.Column("cancel_requested", sa.Boolean, nullable=False, default=False, server_default=sa.false()),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    # `state` included on PostgreSQL (migration 0009): a listing page's keys are read from the
    # index alone (see `JobRepository.page`).
    sa.Index("ix_jobs_owner_seq", "owner", "seq", postgresql_include=["state"]),
    # Partial (migration 0005): only rows that have a request id / native id are indexed.
    sa.Index(
        "ix_jobs_owner_request_id",
        "owner",
        "request_id",
        unique=True,
        sqlite_where=_HAS_REQUEST_ID,
        postgresql_where=_HAS_REQUEST_ID,
    ),
    sa.Index("ix_jobs_state_created_at", "state", "created_at"),
    # Partial (migration 0007): the jobs the monitor may follow, so its claim never scans the
    # finished ones.
    sa.Index(
        "ix_jobs_active",
        "account_key",
        sqlite_where=_ACTIVE,
        postgresql_where=_ACTIVE,
    ),
    sa.Index(
        "ix_jobs_owner_native",
        "owner",
        "native_id",
        sqlite_where=_HAS_NATIVE_ID,
        postgresql_where=_HAS_NATIVE_ID,
    ),
)

# The user's job metadata, one row per pair, so the list filter is a portable EXISTS query.
job_metadata = sa.Table(
    "job_metadata",
    metadata,
    sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(512), nullable=False),
    sa.Index("ix_job_metadata_key_value", "key", "value"),
)


# Mirrored events and checkpoints: `seq` is the gateway's insertion order (chronological, as the
# provider reported them), the stable pagination key; (job_id, native_id) is unique.
def _history_table(name: str) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        sa.Column("seq", Seq, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("native_id", sa.String(255), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Index(f"ix_{name}_job_native", "job_id", "native_id", unique=True),
        sa.Index(f"ix_{name}_job_seq", "job_id", "seq"),
    )


job_events = _history_table("job_events")
job_checkpoints = _history_table("job_checkpoints")

# A gateway file's copy at a provider account: reused by every later job on that account.
provider_files = sa.Table(
    "provider_files",
    metadata,
    sa.Column("file_id", sa.String(64), primary_key=True),
    sa.Column("account_key", sa.String(255), primary_key=True),
    sa.Column("provider", sa.String(64), nullable=False),
    sa.Column("native_id", sa.String(255), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("status_details", sa.Text, nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

# Provider page tokens kept server-side: the client only sends `after=<id>`.
provider_cursors = sa.Table(
    "provider_cursors",
    metadata,
    sa.Column("owner", sa.String(64), primary_key=True),
    sa.Column("account_key", sa.String(255), primary_key=True),
    sa.Column("after_id", sa.String(255), primary_key=True),
    sa.Column("token", sa.Text, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Index("ix_provider_cursors_created_at", "created_at"),
)

# Gateway API keys (migration 0007): only a keyed hash of each key is kept (`tunegate.server.auth`).
# `id` is the key's public part (`tgk_<id>_…`), by which a presented key is looked up.
api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.BigInteger, nullable=True),
    sa.Column("revoked_at", sa.BigInteger, nullable=True),
    sa.Index("ix_api_keys_tenant", "tenant"),
)

# Virtual keys held by the gateway, per owner scope (migration 0007). `secret` is sealed
# (`tunegate.server.auth._crypto`: envelope encryption under the master key); `config` is the
# route as JSON (provider options, region, base URL), never a secret.
virtual_keys = sa.Table(
    "virtual_keys",
    metadata,
    sa.Column("owner", sa.String(64), primary_key=True),
    sa.Column("slug", sa.String(64), primary_key=True),
    sa.Column("provider", sa.String(64), nullable=False),
    sa.Column("config", sa.Text, nullable=False),
    sa.Column("secret", sa.Text, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Index("ix_virtual_keys_updated_at", "updated_at"),
)

# Gateway-wide secrets, sealed under the master key (migration 0007): the API-key hash key.
gateway_secrets = sa.Table(
    "gateway_secrets",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

# The job monitor's schedule (migration 0007): when each followed job is polled next, and which
# replica holds it now (`lease_until`, epoch milliseconds). A job without a row is due at once.
job_polls = sa.Table(
    "job_polls",
    metadata,
    sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("next_at", sa.BigInteger, nullable=False),
    sa.Column("interval", sa.Float, nullable=False),
    sa.Column("lease_until", sa.BigInteger, nullable=True),
    sa.Column("holder", sa.String(64), nullable=True),
    sa.Column("polls", sa.Integer, nullable=False),
    sa.Index("ix_job_polls_next_at", "next_at"),
)

# Webhook endpoints (migration 0008). `secret` holds the signing secret as `seal` left it
# (`tunegate.server.store._webhooks`); a deleted endpoint keeps its row (deleted_at set).
webhook_endpoints = sa.Table(
    "webhook_endpoints",
    metadata,
    sa.Column("seq", Seq, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("owner", sa.String(64), nullable=False),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("events", sa.Text, nullable=False),
    sa.Column("secret", sa.Text, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("deleted_at", sa.BigInteger, nullable=True),
    sa.Index("ix_webhook_endpoints_owner_seq", "owner", "seq"),
)

# One event to one endpoint: (endpoint_id, event_id) is unique, so enqueuing is idempotent.
# `payload` is the exact body sent on every attempt; `next_attempt_at` (Unix seconds, fractional)
# is when a pending delivery is next due — a sender claims it by moving it forward.
webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("event_id", sa.String(64), nullable=False),
    sa.Column("endpoint_id", sa.String(64), nullable=False),
    sa.Column("owner", sa.String(64), nullable=False),
    sa.Column("job_id", sa.String(64), nullable=False),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", sa.Float, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("delivered_at", sa.BigInteger, nullable=True),
    sa.Index("ix_webhook_deliveries_endpoint_event", "endpoint_id", "event_id", unique=True),
    sa.Index("ix_webhook_deliveries_status_next", "status", "next_attempt_at"),
)

# The local provider's state (migration 0010), shared by every replica and worker: one row per
# local job (its OpenAI job object as JSON in `body`), its event log and checkpoints (`seq`
# numbers them per job: `ftevent-<short>-<seq>`, `ftckpt-<short>-<seq>`), and the provider's
# own copies of gateway files. Bytes (files, checkpoint and model tars, the result file) live in
# the blob store under the `*blob_key` columns. `control` (`cancel` | `pause` | NULL) is what the
# runner training the job, wherever it is, reads every poll.
local_jobs = sa.Table(
    "local_jobs",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("tag", sa.String(255), nullable=True),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("control", sa.String(16), nullable=True),
    sa.Column("worker", sa.String(255), nullable=True),
    sa.Column("result_blob_key", sa.String(128), nullable=True),
    sa.Column("model_blob_key", sa.String(128), nullable=True),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Index("ix_local_jobs_created", "created_at", "id"),
    sa.Index("ix_local_jobs_tag", "tag"),
    sa.Index("ix_local_jobs_status", "status"),
)

local_job_events = sa.Table(
    "local_job_events",
    metadata,
    sa.Column("job_id", sa.String(64), sa.ForeignKey("local_jobs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("level", sa.String(16), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("type", sa.String(16), nullable=False),
    sa.Column("data", sa.Text, nullable=True),
)

local_checkpoints = sa.Table(
    "local_checkpoints",
    metadata,
    sa.Column("job_id", sa.String(64), sa.ForeignKey("local_jobs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("metrics", sa.Text, nullable=False),
    sa.Column("blob_key", sa.String(128), nullable=False),
)

local_files = sa.Table(
    "local_files",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("filename", sa.String(512), nullable=False),
    sa.Column("purpose", sa.String(32), nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("blob_key", sa.String(128), nullable=False),
)
