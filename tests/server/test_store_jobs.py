"""`JobRepository` on SQLite and PostgreSQL: an intent is committed when `insert_intent` returns,
one idempotency key has one row, completions are compare-and-set, and `by_native_ids` finds
exactly the owner's jobs."""

from __future__ import annotations

import asyncio
import random
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tunegate.server.store import DuplicateRequestId, migrate
from tunegate.server.store._database import Engine, create_engine
from tunegate.server.store._jobs import JobRepository
from tunegate.server.store._records import JobRecord

SNAPSHOT = {"object": "fine_tuning.job", "status": "queued"}


@pytest.fixture
def url(tmp_path: Path, database_url: str | None) -> str:
    return database_url or f"sqlite:///{tmp_path / 'jobs.db'}"


@pytest.fixture
async def engine(url: str) -> AsyncIterator[Engine]:
    engine = create_engine(url)
    await migrate(engine)
    try:
        yield engine
    finally:
        await engine.dispose()


def _intent(
    owner: str = "o",
    account_key: str = "acct",
    *,
    request_id: str | None = None,
    metadata: dict[str, str] | None = None,
) -> JobRecord:
    return JobRecord(
        id="ftjob-" + secrets.token_hex(12),
        owner=owner,
        provider="openai",
        account_key=account_key,
        state="intent",
        status="validating_files",
        request={"model": "m", "training_file": "file-x"},
        request_hash="h",
        request_id=request_id,
        metadata=metadata,
        created_at=1,
        updated_at=1,
        attempted=True,
        lease_until=100,
    )


async def _created(repo: JobRepository, native_id: str) -> JobRecord:
    record = await repo.insert_intent(_intent())
    snapshot = {"id": record.id, "object": "fine_tuning.job", "status": "queued"}
    assert await repo.complete(record.id, native_id=native_id, status="queued", snapshot=snapshot, now=2)
    return record


async def test_by_native_ids_finds_a_job_completed_after_a_probe_within_its_scope(engine: Engine) -> None:
    repo = JobRepository(engine)
    listed = [f"ftjob-{secrets.token_hex(8)}" for _ in range(3)]  # the PostgreSQL database is shared
    assert await repo.by_native_ids("o", "acct", listed) == {}
    record = await _created(repo, listed[1])
    found = await repo.by_native_ids("o", "acct", listed)
    assert list(found) == [listed[1]] and found[listed[1]].id == record.id
    # Scoped by owner and account, as ever.
    assert await repo.by_native_ids("other", "acct", listed) == {}
    assert await repo.by_native_ids("o", "other-acct", listed) == {}
    assert list(await repo.by_native_ids("o", "acct", listed)) == [listed[1]]


@pytest.mark.parametrize("request_id", [None, "key-1"], ids=["unkeyed", "keyed"])
async def test_an_intent_is_committed_when_insert_intent_returns(
    engine: Engine, url: str, request_id: str | None
) -> None:
    owner = "o-" + secrets.token_hex(4)
    record = await JobRepository(engine).insert_intent(
        _intent(owner, request_id=request_id, metadata={"team": "a"})
    )
    other = create_engine(url)  # another connection, as another process would have
    try:
        stored = await JobRepository(other).get(owner, record.id)
        assert stored is not None
        assert (stored.state, stored.attempted, stored.lease_until, stored.metadata) == (
            "intent",
            True,
            100,
            {"team": "a"},
        )
        assert [r.id for r in await JobRepository(other).page(owner, limit=10, metadata={"team": "a"})] == [
            record.id
        ]
    finally:
        await other.dispose()


async def test_concurrent_inserts_with_one_key_store_one_row(engine: Engine) -> None:
    repo = JobRepository(engine)
    owner = "o-" + secrets.token_hex(4)
    results = await asyncio.gather(
        *(repo.insert_intent(_intent(owner, request_id="storm")) for _ in range(50)), return_exceptions=True
    )
    winners = [r for r in results if isinstance(r, JobRecord)]
    assert len(winners) == 1
    assert all(isinstance(r, DuplicateRequestId) for r in results if r is not winners[0])
    stored = await repo.get_by_request_id(owner, "storm")
    assert stored is not None and stored.id == winners[0].id
    assert [r.id for r in await repo.page(owner, limit=100)] == [stored.id]


async def test_completion_and_failure_are_compare_and_set(engine: Engine) -> None:
    repo = JobRepository(engine)
    owner = "o-" + secrets.token_hex(4)
    record = await repo.insert_intent(_intent(owner))
    assert await repo.acquire_lease(record.id, now=50, until=200) is False  # held until 100
    assert await repo.acquire_lease(record.id, now=100, until=200) is True  # expired
    assert await repo.complete(record.id, native_id="n-1", status="queued", snapshot=SNAPSHOT, now=5)
    assert not await repo.complete(record.id, native_id="n-2", status="queued", snapshot=SNAPSHOT, now=6)
    assert not await repo.fail(record.id, state="failed", error={"message": "x"}, now=7)
    stored = await repo.get(owner, record.id)
    assert stored is not None
    assert (stored.state, stored.native_id, stored.snapshot, stored.lease_until) == (
        "created",
        "n-1",
        SNAPSHOT,
        None,
    )
    # A job given up on and found later is still the caller's job.
    lost = await repo.insert_intent(_intent(owner))
    assert await repo.fail(lost.id, state="failed", error={"message": "x"}, now=7)
    assert await repo.complete(lost.id, native_id="n-3", status="queued", snapshot=SNAPSHOT, now=8)
    assert [r.id for r in await repo.intents_before(10**6) if r.owner == owner] == []


async def test_concurrent_creates_completions_and_reads_all_finish(engine: Engine) -> None:
    repo = JobRepository(engine)
    owner = "o-" + secrets.token_hex(4)
    rng = random.Random(7)

    async def create() -> str:
        record = await repo.insert_intent(_intent(owner))
        await asyncio.sleep(rng.random() / 500)
        assert await repo.complete(
            record.id, native_id="n-" + record.id, status="queued", snapshot=SNAPSHOT, now=5
        )
        return record.id

    async def read() -> None:
        for _ in range(20):
            await repo.page(owner, limit=5)
            await asyncio.sleep(rng.random() / 500)

    results = await asyncio.wait_for(
        asyncio.gather(*(create() for _ in range(100)), *(read() for _ in range(4))), 60
    )
    created = {job_id for job_id in results if job_id}
    rows = await repo.page(owner, limit=100)
    assert len(created) == 100 and {r.id for r in rows} == created
    assert {r.state for r in rows} == {"created"}


async def test_page_walks_an_owners_jobs_newest_first_after_a_cursor(engine: Engine) -> None:
    repo = JobRepository(engine)
    owner, other = "o-" + secrets.token_hex(4), "o-" + secrets.token_hex(4)
    ids = [(await repo.insert_intent(_intent(owner, metadata={"n": str(i % 2)}))).id for i in range(5)]
    theirs = (await repo.insert_intent(_intent(other))).id
    hidden = await repo.insert_intent(_intent(owner))
    assert await repo.fail(hidden.id, state="failed_to_create", error={"message": "x"}, now=2)
    newest_first = ids[::-1]

    async def page(limit: int, after: str | None = None, metadata: dict[str, str] | None = None) -> list[str]:
        rows = await repo.page(
            owner, limit=limit, after=after, metadata=metadata, hidden_states=("failed_to_create",)
        )
        return [r.id for r in rows]

    assert await page(limit=3) == newest_first[:3]
    assert await page(limit=3, after=newest_first[2]) == newest_first[3:]
    assert await page(limit=10, after=newest_first[1], metadata={"n": "0"}) == [ids[2], ids[0]]
    assert await page(limit=3, after=ids[0]) == []  # after the oldest job: the end
    # A cursor the owner cannot use gives no rows: another owner's job, an unknown id.
    assert await page(limit=3, after=theirs) == []
    assert await page(limit=3, after="ftjob-unknown") == []
    # A hidden job is left out, yet still a cursor (a client may hold its id from a create).
    assert await page(limit=10, after=hidden.id) == newest_first
    assert [r.id for r in await repo.page(owner, limit=1)] == [hidden.id]
