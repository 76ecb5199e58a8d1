"""The `webhook_endpoints` and `webhook_deliveries` repository, and the enqueuing of a job's
terminal event inside the transaction that writes the job's status.

Enqueuing is idempotent: an event's id is derived from (job id, event type) and (endpoint id,
event id) is unique, so a transition written twice (two servers refreshing one job) enqueues
each endpoint's delivery once. Sending is claimed by a compare-and-set on `next_attempt_at`, so
two senders never both take one attempt; a sender that dies holding a claim leaves the delivery
due again once the claim runs out (at least once).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Protocol

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from tunegate.server.store._database import Engine
from tunegate.server.store._records import DueDelivery, WebhookDeliveryRecord, WebhookEndpointRecord
from tunegate.server.store._schema import webhook_deliveries, webhook_endpoints

__all__ = [
    "JOB_EVENT_TYPES",
    "PENDING",
    "WebhookRepository",
    "enqueue_job_event",
    "event_id",
    "job_event_payload",
    "seal",
    "unseal",
]

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"

JOB_EVENT_TYPES: Mapping[str, str] = {
    "succeeded": "fine_tuning.job.succeeded",
    "failed": "fine_tuning.job.failed",
    "cancelled": "fine_tuning.job.cancelled",
}
"""A terminal job status → the OpenAI webhook event type it sends."""


class Sealer(Protocol):
    """Envelope encryption of a secret bound to `aad` (`tunegate.server.auth.MasterKey`)."""

    def seal(self, plaintext: bytes, aad: bytes) -> str: ...

    def unseal(self, sealed: str, aad: bytes) -> bytes: ...


def endpoint_secret_aad(endpoint_id: str) -> bytes:
    """What an endpoint's sealed signing secret is bound to (its id)."""
    return f"webhook_endpoints:{endpoint_id}".encode()


def seal(sealer: Sealer | None, endpoint_id: str, secret: str) -> str:
    """The stored form of an endpoint's signing secret: sealed under the master key (bound to the
    endpoint's id), or the secret itself when the repository has no sealer."""
    return secret if sealer is None else sealer.seal(secret.encode("utf-8"), endpoint_secret_aad(endpoint_id))


def unseal(sealer: Sealer | None, endpoint_id: str, stored: str) -> str:
    """The signing secret from its stored form (the inverse of `seal`)."""
    if sealer is None or stored.startswith("whsec_"):
        return stored
    return sealer.unseal(stored, endpoint_secret_aad(endpoint_id)).decode("utf-8")


def event_id(job_id: str, event_type: str) -> str:
    """The event's id, `evt_` + 32 hex digits: the same for every delivery and redelivery of one
    job's event of one type (so receivers can deduplicate), different across jobs and types."""
    return "evt_" + hashlib.sha256(f"{job_id}\n{event_type}".encode()).hexdigest()[:32]


def _delivery_id(endpoint_id: str, event: str) -> str:
    # The `webhook-id` header: one per (endpoint, event), the same on every attempt.
    return "wh_" + hashlib.sha256(f"{endpoint_id}\n{event}".encode()).hexdigest()[:32]


def job_event_payload(job_id: str, event_type: str, created_at: int) -> str:
    """The event body in OpenAI's shape (`WebhookFineTuningJobSucceeded` and its siblings)."""
    return orjson.dumps(
        {
            "id": event_id(job_id, event_type),
            "object": "event",
            "created_at": created_at,
            "type": event_type,
            "data": {"id": job_id},
        }
    ).decode()


def _insert_ignoring_duplicates(dialect: str) -> Any:
    # Portable "insert unless (endpoint_id, event_id) exists": each dialect's ON CONFLICT.
    if dialect == "postgresql":
        return postgresql.insert(webhook_deliveries).on_conflict_do_nothing()
    return sqlite.insert(webhook_deliveries).on_conflict_do_nothing()


async def enqueue_job_event(conn: Any, *, owner: str, job_id: str, status: str, now: int) -> int:
    """In the caller's transaction: one pending delivery of the job's terminal event to each of
    `owner`'s live endpoints subscribed to it. Returns how many were new (0 for a status that is
    not terminal)."""
    event_type = JOB_EVENT_TYPES.get(status)
    if event_type is None:
        return 0
    query = sa.select(webhook_endpoints.c.id, webhook_endpoints.c.events).where(
        webhook_endpoints.c.owner == owner, webhook_endpoints.c.deleted_at.is_(None)
    )
    targets = [row.id for row in (await conn.execute(query)).all() if event_type in orjson.loads(row.events)]
    if not targets:
        return 0
    event = event_id(job_id, event_type)
    payload = job_event_payload(job_id, event_type, now)
    rows = [
        {
            "id": _delivery_id(endpoint, event),
            "event_id": event,
            "endpoint_id": endpoint,
            "owner": owner,
            "job_id": job_id,
            "type": event_type,
            "payload": payload,
            "attempts": 0,
            "next_attempt_at": float(now),
            "status": PENDING,
            "created_at": now,
        }
        for endpoint in targets
    ]
    result = await conn.execute(_insert_ignoring_duplicates(conn.dialect.name), rows)
    return max(int(result.rowcount), 0)


def _endpoint(row: sa.Row[Any], sealer: Sealer | None) -> WebhookEndpointRecord:
    values = row._asdict()
    values["events"] = tuple(orjson.loads(values["events"]))
    values["secret"] = unseal(sealer, values["id"], values["secret"])
    return WebhookEndpointRecord(**values)


def _delivery(values: Mapping[str, Any]) -> WebhookDeliveryRecord:
    names = WebhookDeliveryRecord.__slots__
    return WebhookDeliveryRecord(**{name: values[name] for name in names})


_DUE = (
    sa.select(
        webhook_deliveries,
        webhook_endpoints.c.url,
        webhook_endpoints.c.secret.label("endpoint_secret"),
        webhook_endpoints.c.deleted_at.label("endpoint_deleted_at"),
    )
    .join(webhook_endpoints, webhook_endpoints.c.id == webhook_deliveries.c.endpoint_id)
    .where(
        webhook_deliveries.c.status == PENDING,
        webhook_deliveries.c.next_attempt_at <= sa.bindparam("now"),
    )
    .order_by(webhook_deliveries.c.next_attempt_at)
    .limit(sa.bindparam("limit"))
)


class WebhookRepository:
    """Reads and writes endpoints and deliveries. Methods taking `owner` are scoped to it; the
    sender's methods (`due`, `claim`, the outcomes) work across owners."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.sealer: Sealer | None = None
        """Seals signing secrets at rest (the server sets its master key here)."""

    # -- endpoints ------------------------------------------------------------------------

    async def insert_endpoint(self, record: WebhookEndpointRecord) -> None:
        values = {
            "id": record.id,
            "owner": record.owner,
            "url": record.url,
            "events": orjson.dumps(list(record.events)).decode(),
            "secret": seal(self.sealer, record.id, record.secret),
            "created_at": record.created_at,
        }
        async with self._engine.begin() as conn:
            await conn.execute(webhook_endpoints.insert(), values)

    async def endpoints(self, owner: str) -> list[WebhookEndpointRecord]:
        """The owner's live endpoints, newest first."""
        query = (
            webhook_endpoints.select()
            .where(webhook_endpoints.c.owner == owner, webhook_endpoints.c.deleted_at.is_(None))
            .order_by(webhook_endpoints.c.seq.desc())
        )
        async with self._engine.connect() as conn:
            return [_endpoint(row, self.sealer) for row in (await conn.execute(query)).all()]

    async def get_endpoint(self, owner: str, endpoint_id: str) -> WebhookEndpointRecord | None:
        """The owner's live endpoint, or None (absent, deleted, or another owner's)."""
        query = webhook_endpoints.select().where(
            webhook_endpoints.c.owner == owner,
            webhook_endpoints.c.id == endpoint_id,
            webhook_endpoints.c.deleted_at.is_(None),
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _endpoint(row, self.sealer)

    async def delete_endpoint(self, owner: str, endpoint_id: str, *, now: int) -> bool:
        """Mark the owner's live endpoint deleted and its pending deliveries failed; False if
        there was no such endpoint."""
        async with self._engine.begin() as conn:
            result = await conn.execute(
                webhook_endpoints.update()
                .where(
                    webhook_endpoints.c.owner == owner,
                    webhook_endpoints.c.id == endpoint_id,
                    webhook_endpoints.c.deleted_at.is_(None),
                )
                .values(deleted_at=now)
            )
            if result.rowcount != 1:
                return False
            await conn.execute(
                webhook_deliveries.update()
                .where(
                    webhook_deliveries.c.endpoint_id == endpoint_id,
                    webhook_deliveries.c.status == PENDING,
                )
                .values(status=FAILED, last_error="endpoint deleted")
            )
        return True

    # -- deliveries -----------------------------------------------------------------------

    async def deliveries(self, owner: str, *, job_id: str | None = None) -> list[WebhookDeliveryRecord]:
        """The owner's delivery log (optionally one job's), oldest first."""
        query = webhook_deliveries.select().where(webhook_deliveries.c.owner == owner)
        if job_id is not None:
            query = query.where(webhook_deliveries.c.job_id == job_id)
        query = query.order_by(webhook_deliveries.c.created_at, webhook_deliveries.c.id)
        async with self._engine.connect() as conn:
            return [_delivery(row._asdict()) for row in (await conn.execute(query)).all()]

    async def due(self, now: float, *, limit: int) -> list[DueDelivery]:
        """Pending deliveries due at `now`, the longest-waiting first."""
        async with self._engine.connect() as conn:
            rows = (await conn.execute(_DUE, {"now": now, "limit": limit})).all()
        return [
            DueDelivery(
                delivery=_delivery(values),
                url=values["url"],
                secret=unseal(self.sealer, values["endpoint_id"], values["endpoint_secret"]),
                endpoint_deleted=values["endpoint_deleted_at"] is not None,
            )
            for values in (row._asdict() for row in rows)
        ]

    async def stored_secrets(self) -> dict[str, str]:
        """Every endpoint's signing secret as stored (sealed), by endpoint id: what a master-key
        rotation re-wraps (`tunegate.server.auth.rotate_master`)."""
        query = sa.select(webhook_endpoints.c.id, webhook_endpoints.c.secret)
        async with self._engine.connect() as conn:
            return {endpoint_id: stored for endpoint_id, stored in (await conn.execute(query)).all()}

    async def next_due(self) -> float | None:
        """When the earliest pending delivery is due (None: nothing pending)."""
        query = sa.select(sa.func.min(webhook_deliveries.c.next_attempt_at)).where(
            webhook_deliveries.c.status == PENDING
        )
        async with self._engine.connect() as conn:
            value = (await conn.execute(query)).scalar()
        return None if value is None else float(value)

    async def claim(self, delivery_id: str, *, seen: float, until: float) -> bool:
        """Take the next attempt of a pending delivery due at `seen`, moving it to `until` (when
        it is due again should this sender never report an outcome)."""
        return await self._changed(
            webhook_deliveries.update()
            .where(
                webhook_deliveries.c.id == delivery_id,
                webhook_deliveries.c.status == PENDING,
                webhook_deliveries.c.next_attempt_at == seen,
            )
            .values(next_attempt_at=until)
        )

    async def mark_delivered(self, delivery_id: str, *, attempts: int, now: int) -> bool:
        return await self._changed(
            webhook_deliveries.update()
            .where(webhook_deliveries.c.id == delivery_id, webhook_deliveries.c.status == PENDING)
            .values(status=DELIVERED, attempts=attempts, delivered_at=now, last_error=None)
        )

    async def retry_later(self, delivery_id: str, *, attempts: int, at: float, error: str) -> bool:
        return await self._changed(
            webhook_deliveries.update()
            .where(webhook_deliveries.c.id == delivery_id, webhook_deliveries.c.status == PENDING)
            .values(attempts=attempts, next_attempt_at=at, last_error=error)
        )

    async def mark_failed(self, delivery_id: str, *, attempts: int, error: str) -> bool:
        return await self._changed(
            webhook_deliveries.update()
            .where(webhook_deliveries.c.id == delivery_id, webhook_deliveries.c.status == PENDING)
            .values(status=FAILED, attempts=attempts, last_error=error)
        )

    async def _changed(self, query: sa.Update) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(query)
        return bool(result.rowcount == 1)
