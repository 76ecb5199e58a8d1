"""Enqueuing and sending on SQLite and PostgreSQL: a job's terminal transition enqueues one
delivery per subscribed endpoint of its owner (once, however often it is written), and the
sender delivers it signed to a real receiver, retrying 5xx/429/network errors with the same
event id, giving up after `max_attempts`, never sending to a deleted endpoint or a private
address.

On PostgreSQL one database serves the session, so a sender also sees other tests' deliveries:
the tests check their own owner's deliveries and their own receiver, not the sender's counts."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

import openai
import orjson
import pytest
from openai.types.webhooks import FineTuningJobSucceededWebhookEvent
from tunegate.server.store import Database, JobRecord, WebhookEndpointRecord, event_id
from tunegate.server.webhooks import HostPolicy, WebhookSender, WebhookSettings, new_secret

from tests.server.webhooks.receiver import Receiver, start_receiver


class Clock:
    """Real time plus a settable offset (signatures are checked against real time)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture
async def database(tmp_path: Path, database_url: str | None) -> AsyncIterator[Database]:
    db = await Database.open(database_url or f"sqlite:///{tmp_path / 'hooks.db'}")
    try:
        yield db
    finally:
        await db.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await start_receiver()
    try:
        yield r
    finally:
        await r.stop()


SETTINGS = WebhookSettings(
    allowed_hosts=("127.0.0.1",), backoff_seconds=10, max_attempts=3, timeout_seconds=2
)


def sender_for(database: Database, clock: Clock, **settings: object) -> WebhookSender:
    merged = WebhookSettings(**{**{f: getattr(SETTINGS, f) for f in SETTINGS.__slots__}, **settings})
    return WebhookSender(database.webhooks, merged, clock=clock, jitter=lambda: 0.5)


async def endpoint(
    database: Database, owner: str, url: str, events: tuple[str, ...] | None = None
) -> WebhookEndpointRecord:
    record = WebhookEndpointRecord(
        id="we_" + secrets.token_hex(12),
        owner=owner,
        url=url,
        events=events or ("fine_tuning.job.succeeded", "fine_tuning.job.failed", "fine_tuning.job.cancelled"),
        secret=new_secret(),
        created_at=int(time.time()),
    )
    await database.webhooks.insert_endpoint(record)
    return record


async def created_job(database: Database, owner: str) -> str:
    job_id = "ftjob-" + secrets.token_hex(12)
    now = int(time.time())
    await database.jobs.insert_intent(
        JobRecord(
            id=job_id,
            owner=owner,
            provider="openai",
            account_key="acct",
            state="intent",
            status="validating_files",
            request={"model": "m", "training_file": "file-x"},
            request_hash="h",
            created_at=now,
            updated_at=now,
            attempted=True,
        )
    )
    snapshot = {"id": job_id, "status": "queued"}
    native = "n-" + job_id
    assert await database.jobs.complete(job_id, native_id=native, status="queued", snapshot=snapshot, now=now)
    return job_id


async def finish(database: Database, job_id: str, status: str = "succeeded", **extra: object) -> None:
    snapshot = {"id": job_id, "status": status, **extra}
    await database.jobs.update_snapshot(job_id, status=status, snapshot=snapshot, now=int(time.time()))


async def test_a_terminal_transition_enqueues_once_per_subscribed_endpoint(
    database: Database, receiver: Receiver
) -> None:
    owner, other = "owner-" + secrets.token_hex(4), "other-" + secrets.token_hex(4)
    everything = await endpoint(database, owner, receiver.url)
    failures_only = await endpoint(database, owner, receiver.url, ("fine_tuning.job.failed",))
    await endpoint(database, other, receiver.url)
    wakes: list[int] = []
    database.jobs.after_enqueue = lambda: wakes.append(1)
    job_id = await created_job(database, owner)

    await finish(database, job_id, "running")
    assert await database.webhooks.deliveries(owner) == []
    await finish(database, job_id, "succeeded")
    await finish(database, job_id, "succeeded", result_files=["file-1"])  # a later snapshot change
    await asyncio.gather(*(finish(database, job_id, "succeeded", n=i) for i in range(3)))

    (delivery,) = await database.webhooks.deliveries(owner)
    assert delivery.endpoint_id == everything.id != failures_only.id
    assert delivery.event_id == event_id(job_id, "fine_tuning.job.succeeded")
    assert (delivery.type, delivery.status, delivery.attempts, delivery.job_id) == (
        "fine_tuning.job.succeeded",
        "pending",
        0,
        job_id,
    )
    assert orjson.loads(delivery.payload)["data"] == {"id": job_id}
    assert wakes == [1]
    assert await database.webhooks.deliveries(other) == []


async def test_a_5xx_is_retried_with_the_same_ids_then_delivered(
    database: Database, receiver: Receiver
) -> None:
    owner = "owner-" + secrets.token_hex(4)
    target = await endpoint(database, owner, receiver.url)
    job_id = await created_job(database, owner)
    await finish(database, job_id)
    clock = Clock()
    sender = sender_for(database, clock)
    receiver.statuses = [500]
    try:
        await sender.run_once()
        (pending,) = await database.webhooks.deliveries(owner)
        assert (pending.status, pending.attempts, pending.last_error) == ("pending", 1, "HTTP 500")
        assert pending.next_attempt_at == pytest.approx(clock() + 10, abs=2)  # backoff 10 s, jitter 0
        await sender.run_once()
        assert len(receiver.received) == 1  # not due yet
        clock.offset = 11
        await sender.run_once()
    finally:
        await sender.aclose()
    (delivered,) = await database.webhooks.deliveries(owner)
    assert (delivered.status, delivered.attempts) == ("delivered", 2)
    assert delivered.delivered_at is not None
    first, second = receiver.received
    assert first.body == second.body
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == delivered.id
    assert first.headers["Content-Type"] == "application/json"
    sdk = openai.OpenAI(api_key="unused", base_url="http://127.0.0.1:9/v1", webhook_secret=target.secret)
    for request in (first, second):
        event = sdk.webhooks.unwrap(request.body, request.headers)
        assert isinstance(event, FineTuningJobSucceededWebhookEvent)
        assert event.id == delivered.event_id and event.data.id == job_id


async def test_retry_after_is_honoured_and_the_sender_gives_up(
    database: Database, receiver: Receiver
) -> None:
    owner = "owner-" + secrets.token_hex(4)
    await endpoint(database, owner, receiver.url)
    await finish(database, await created_job(database, owner), "failed")
    clock = Clock()
    sender = sender_for(database, clock)
    receiver.statuses = [429, 503, 502]
    receiver.answer_headers = {"Retry-After": "42"}
    try:
        await sender.run_once()
        (delivery,) = await database.webhooks.deliveries(owner)
        assert delivery.next_attempt_at == pytest.approx(clock() + 42, abs=2)
        for attempt in (2, 3):
            clock.offset += 43
            await sender.run_once()
            assert len(receiver.received) == attempt
    finally:
        await sender.aclose()
    (failed,) = await database.webhooks.deliveries(owner)
    assert (failed.status, failed.attempts) == ("failed", 3)
    assert failed.last_error == "HTTP 502 (gave up after 3 attempts)"
    assert len(receiver.received) == 3 and len({r.headers["webhook-id"] for r in receiver.received}) == 1


async def test_network_errors_are_retried_and_other_4xx_fail_at_once(
    database: Database, receiver: Receiver
) -> None:
    owner = "owner-" + secrets.token_hex(4)
    closed = await start_receiver()
    await closed.stop()  # nothing listens on its port any more
    await endpoint(database, owner, closed.url)
    await endpoint(database, owner, receiver.url)
    receiver.statuses = [410]
    await finish(database, await created_job(database, owner), "cancelled")
    sender = sender_for(database, Clock())
    try:
        await sender.run_once()
    finally:
        await sender.aclose()
    by_url = {d.endpoint_id: d for d in await database.webhooks.deliveries(owner)}
    statuses = sorted((d.status, d.attempts, (d.last_error or "").split(":")[0]) for d in by_url.values())
    assert statuses == [("failed", 1, "HTTP 410"), ("pending", 1, "ConnectError")]


async def test_two_senders_never_both_take_one_attempt(database: Database, receiver: Receiver) -> None:
    owner = "owner-" + secrets.token_hex(4)
    await endpoint(database, owner, receiver.url)
    await finish(database, await created_job(database, owner))
    clock = Clock()
    senders = [sender_for(database, clock) for _ in range(2)]
    try:
        attempted = await asyncio.gather(*(s.run_once() for s in senders))
    finally:
        for s in senders:
            await s.aclose()
    assert sum(attempted) >= 1 and len(receiver.received) == 1


async def test_a_deleted_endpoint_gets_nothing(database: Database, receiver: Receiver) -> None:
    owner = "owner-" + secrets.token_hex(4)
    target = await endpoint(database, owner, receiver.url)
    await finish(database, await created_job(database, owner))
    assert not await database.webhooks.delete_endpoint("someone-else", target.id, now=1)
    assert await database.webhooks.delete_endpoint(owner, target.id, now=1)
    sender = sender_for(database, Clock())
    try:
        await sender.run_once()
    finally:
        await sender.aclose()
    (dropped,) = await database.webhooks.deliveries(owner)
    assert (dropped.status, dropped.last_error) == ("failed", "endpoint deleted")
    assert receiver.received == []


async def test_a_name_that_resolves_to_a_private_address_is_refused(database: Database) -> None:
    owner = "owner-" + secrets.token_hex(4)
    await endpoint(database, owner, "https://hooks.example.com/x")
    await finish(database, await created_job(database, owner))

    async def resolve(host: str, port: int) -> list[str]:
        assert (host, port) == ("hooks.example.com", 443)
        return ["10.0.0.8"]

    sender = WebhookSender(database.webhooks, SETTINGS, policy=HostPolicy(), resolve=resolve)
    try:
        await sender.run_once()
    finally:
        await sender.aclose()
    (refused,) = await database.webhooks.deliveries(owner)
    assert refused.status == "failed" and "10.0.0.8" in (refused.last_error or "")
