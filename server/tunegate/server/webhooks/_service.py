"""Owner-scoped webhook endpoints: register, list, get, delete. Answers are the contract's
messages; the servicer passes them on as they are.

Every method takes the caller's owner scope first; another owner's endpoint id is 404, exactly
like an unknown one. The signing secret is returned by `create` only, and never logged.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from tunegate.server.errors import InvalidArgument, NotFound
from tunegate.server.files import Clock
from tunegate.server.ids import is_well_formed, new_id
from tunegate.server.store import JOB_EVENT_TYPES, WebhookEndpointRecord, WebhookRepository
from tunegate.server.webhooks._hosts import HostPolicy
from tunegate.server.webhooks._signing import new_secret
from tunegate.v1 import webhooks_pb2

__all__ = ["ENDPOINT_PREFIX", "EVENT_TYPES", "WebhookService"]

ENDPOINT_PREFIX = "we_"
EVENT_TYPES = tuple(JOB_EVENT_TYPES.values())
"""The event types an endpoint may subscribe to (OpenAI's fine-tuning job events)."""


def _not_found(endpoint_id: str) -> NotFound:
    return NotFound(f"No such webhook endpoint: {endpoint_id}", code="webhook_endpoint_not_found", param="id")


def _message(record: WebhookEndpointRecord, *, with_secret: bool = False) -> webhooks_pb2.WebhookEndpoint:
    message = webhooks_pb2.WebhookEndpoint(
        id=record.id, url=record.url, events=list(record.events), created_at=record.created_at
    )
    if with_secret:
        message.secret = record.secret
    return message


def _events(events: Sequence[str]) -> tuple[str, ...]:
    if not events:
        return EVENT_TYPES
    unknown = [event for event in events if event not in EVENT_TYPES]
    if unknown:
        raise InvalidArgument(
            f"Unknown webhook event type {unknown[0]!r}; expected any of {', '.join(EVENT_TYPES)}.",
            code="invalid_value",
            param="events",
        )
    return tuple(dict.fromkeys(events))


class WebhookService:
    """Webhook endpoint operations (see the module docstring)."""

    def __init__(self, repo: WebhookRepository, policy: HostPolicy, *, clock: Clock = time.time) -> None:
        self._repo = repo
        self._policy = policy
        self._clock = clock

    async def create(self, owner: str, url: str, events: Sequence[str]) -> webhooks_pb2.WebhookEndpoint:
        """Register an endpoint; the answer carries its `whsec_…` secret (and is the only one).
        `InvalidArgument` naming `url` or `events` for a refused URL or an unknown event type."""
        target = self._policy.check_url(url)
        record = WebhookEndpointRecord(
            id=new_id(ENDPOINT_PREFIX),
            owner=owner,
            url=target.url,
            events=_events(events),
            secret=new_secret(),
            created_at=int(self._clock()),
        )
        await self._repo.insert_endpoint(record)
        return _message(record, with_secret=True)

    async def list(self, owner: str) -> webhooks_pb2.ListWebhookEndpointsResponse:
        """The owner's endpoints, newest first."""
        records = await self._repo.endpoints(owner)
        return webhooks_pb2.ListWebhookEndpointsResponse(data=[_message(r) for r in records], has_more=False)

    async def get(self, owner: str, endpoint_id: str) -> webhooks_pb2.WebhookEndpoint:
        return _message(await self._owned(owner, endpoint_id))

    async def delete(self, owner: str, endpoint_id: str) -> webhooks_pb2.DeleteWebhookEndpointResponse:
        """Delete the owner's endpoint; its pending deliveries are dropped (marked failed)."""
        if not (
            is_well_formed(endpoint_id, ENDPOINT_PREFIX)
            and await self._repo.delete_endpoint(owner, endpoint_id, now=int(self._clock()))
        ):
            raise _not_found(endpoint_id)
        return webhooks_pb2.DeleteWebhookEndpointResponse(id=endpoint_id, deleted=True)

    async def _owned(self, owner: str, endpoint_id: str) -> WebhookEndpointRecord:
        record = (
            await self._repo.get_endpoint(owner, endpoint_id)
            if is_well_formed(endpoint_id, ENDPOINT_PREFIX)
            else None
        )
        if record is None:
            raise _not_found(endpoint_id)
        return record
