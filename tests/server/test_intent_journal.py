"""The intent journal (SQLite with a database file): an intent without an idempotency key is
recorded by one appended line and reaches the `jobs` table in a batch — every statement on jobs
sees it first, a completion stores it completed, and after a crash it is replayed at start-up."""

from __future__ import annotations

import asyncio
import random
import secrets
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tunegate.server.store import Database
from tunegate.server.store import _jobs as jobs_module
from tunegate.server.store._database import write_one
from tunegate.server.store._jobs import Completion, JobRepository
from tunegate.server.store._journal import IntentJournal
from tunegate.server.store._records import JobRecord

SNAPSHOT = {"object": "fine_tuning.job", "status": "queued"}


def _intent(*, request_id: str | None = None, metadata: dict[str, str] | None = None) -> JobRecord:
    return JobRecord(
        id="ftjob-" + secrets.token_hex(12),
        owner="o",
        provider="openai",
        account_key="acct",
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


def _table(path: Path) -> dict[str, tuple[str, int]]:
    """The jobs table as another connection sees it: id → (state, attempted)."""
    with sqlite3.connect(path) as conn:
        return {row[0]: (row[1], row[2]) for row in conn.execute("SELECT id, state, attempted FROM jobs")}


def _journal_bytes(path: Path) -> int:
    return sum(Path(f"{path}-intents.{index}").stat().st_size for index in (0, 1))


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "tunegate.db"


@pytest.fixture
async def database(db_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(f"sqlite:///{db_path}")
    try:
        yield database
    finally:
        await database.close()


async def crash(database: Database) -> None:
    """The process dies: nothing pending is stored, the journal's files stay as they are."""
    repo = database.jobs
    assert repo._journal is not None
    repo._journal.close()
    repo._journal = None
    repo._pending.clear()
    await database.engine.dispose()


async def test_an_intent_without_a_key_is_a_journal_line_until_its_batch(
    database: Database, db_path: Path
) -> None:
    record = await database.jobs.insert_intent(_intent())
    assert record.id not in _table(db_path)
    assert _journal_bytes(db_path) > 0
    got = await database.jobs.get("o", record.id)  # a read stores the journaled intents first
    assert got is not None and (got.state, got.attempted, got.lease_until) == ("intent", True, 100)
    assert _table(db_path)[record.id] == ("intent", 1)
    assert _journal_bytes(db_path) == 0


async def test_an_intent_with_a_key_is_stored_at_once(database: Database, db_path: Path) -> None:
    record = await database.jobs.insert_intent(_intent(request_id="key-1"))
    assert _table(db_path)[record.id] == ("intent", 1)


async def test_a_completion_stores_its_journaled_intent_completed(database: Database, db_path: Path) -> None:
    first = await database.jobs.insert_intent(_intent(metadata={"team": "a"}))
    in_flight = await database.jobs.insert_intent(_intent())
    completion = Completion(first.id, "ftjob-native-1", "queued", {**SNAPSHOT, "id": first.id}, 5)
    assert await database.jobs.complete_many([completion]) == 1
    assert _table(db_path) == {first.id: ("created", 1)}  # the other one's call is still running
    assert _journal_bytes(db_path) > 0  # its line, carried over
    stored = await database.jobs.get_any(first.id)
    assert stored is not None
    assert (stored.state, stored.native_id, stored.snapshot, stored.metadata, stored.lease_until) == (
        "created",
        "ftjob-native-1",
        {**SNAPSHOT, "id": first.id},
        {"team": "a"},
        None,
    )
    assert (await database.jobs.by_native_ids("o", "acct", ["ftjob-native-1"])).keys() == {"ftjob-native-1"}
    assert _table(db_path)[in_flight.id] == ("intent", 1)  # that read stored it too
    assert _journal_bytes(db_path) == 0


async def test_completions_of_stored_and_journaled_rows_are_one_transaction(database: Database) -> None:
    stored = await database.jobs.insert_intent(_intent(request_id="key-2"))
    journaled = await database.jobs.insert_intent(_intent())
    completions = [
        Completion(stored.id, "n-1", "queued", SNAPSHOT, 5),
        Completion(journaled.id, "n-2", "queued", SNAPSHOT, 5),
    ]
    assert await database.jobs.complete_many(completions) == 2
    assert await database.jobs.complete_many(completions) == 0  # both are finished now
    states = [r.state for r in await database.jobs.page("o", limit=10)]
    assert states == ["created", "created"]


@pytest.mark.parametrize(
    "call",
    [
        lambda repo, job_id: repo.get("o", job_id),
        lambda repo, job_id: repo.get_any(job_id),
        lambda repo, job_id: repo.page("o", limit=10),
        lambda repo, job_id: repo.intents_before(10),
        lambda repo, job_id: repo.acquire_lease(job_id, now=200, until=300),
        lambda repo, job_id: repo.release_lease(job_id),
        lambda repo, job_id: repo.mark_attempted(job_id, now=2),
        lambda repo, job_id: repo.fail(job_id, state="failed_to_create", error={"message": "x"}, now=2),
        lambda repo, job_id: repo.insert_intent(_intent(request_id="key-3")),
    ],
    ids=[
        "get",
        "get_any",
        "page",
        "intents_before",
        "acquire_lease",
        "release_lease",
        "mark_attempted",
        "fail",
        "keyed",
    ],
)
async def test_every_statement_on_jobs_sees_the_journaled_intents(
    database: Database, db_path: Path, call: Any
) -> None:
    record = await database.jobs.insert_intent(_intent())
    await call(database.jobs, record.id)
    assert record.id in _table(db_path)


async def test_a_crash_before_the_batch_is_replayed_at_start_up(db_path: Path) -> None:
    database = await Database.open(f"sqlite:///{db_path}")
    done = await database.jobs.insert_intent(_intent(metadata={"k": "done"}))
    done_line = database.jobs._pending[done.id][1]
    await database.jobs.get_any(done.id)  # stored
    assert await database.jobs.complete(done.id, native_id="n-1", status="queued", snapshot=SNAPSHOT, now=5)
    lost = await database.jobs.insert_intent(_intent(metadata={"k": "v"}))
    # A stale line whose row is stored (a crash between the commit and the file's emptying).
    assert database.jobs._journal is not None
    database.jobs._journal.append(done_line)
    await crash(database)
    assert lost.id not in _table(db_path)

    database = await Database.open(f"sqlite:///{db_path}")
    try:
        replayed = await database.jobs.get_any(lost.id)
        assert replayed is not None
        assert (replayed.state, replayed.attempted, replayed.metadata) == ("intent", True, {"k": "v"})
        kept = await database.jobs.get_any(done.id)
        assert kept is not None and (kept.state, kept.native_id) == ("created", "n-1")  # unchanged
        assert [r.id for r in await database.jobs.intents_before(10)] == [lost.id]  # for the reconciler
        assert _journal_bytes(db_path) == 0
    finally:
        await database.close()


async def test_closing_stores_the_journaled_intents(db_path: Path) -> None:
    database = await Database.open(f"sqlite:///{db_path}")
    record = await database.jobs.insert_intent(_intent())
    await database.close()
    assert _table(db_path)[record.id] == ("intent", 1)
    assert _journal_bytes(db_path) == 0


async def test_slow_provider_calls_have_their_intents_stored_by_the_backstop(
    database: Database, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs_module, "JOURNAL_BACKSTOP", 0.01)
    record = await database.jobs.insert_intent(_intent())
    for _ in range(100):
        if record.id in _table(db_path):
            break
        await asyncio.sleep(0.01)
    assert _table(db_path)[record.id] == ("intent", 1)


async def test_a_batch_that_cannot_be_stored_keeps_its_intents_journaled(
    database: Database, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = await database.jobs.insert_intent(_intent())
    real = write_one
    calls = 0

    async def failing(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise sqlite3.OperationalError("disk I/O error")
        return await real(*args, **kwargs)

    monkeypatch.setattr(jobs_module, "write_one", failing)
    with pytest.raises(sqlite3.OperationalError):
        await database.jobs.get_any(record.id)
    assert record.id not in _table(db_path)
    entries = IntentJournal.entries(database.jobs._journal)  # type: ignore[arg-type]
    assert record.id in {entry["row"]["id"] for entry in entries}
    again = await database.jobs.get_any(record.id)  # the next statement stores it
    assert again is not None and again.state == "intent"
    left = IntentJournal.entries(database.jobs._journal)  # type: ignore[arg-type]
    assert {entry["row"]["id"] for entry in left} <= set(_table(db_path))  # a replay would be a no-op


async def test_a_second_database_on_the_same_file_stores_intents_directly(
    database: Database, db_path: Path
) -> None:
    other = JobRepository(database.engine)
    assert other._journal is None
    record = await other.insert_intent(_intent())
    assert record.id in _table(db_path)


def test_a_torn_or_unreadable_line_is_skipped(tmp_path: Path) -> None:
    journal = IntentJournal.open(str(tmp_path / "x.db"))
    assert journal is not None
    try:
        journal.append(b'{"row": {"id": "a"}}\nnot json\n')
        previous = journal.switch(b'{"row": {"id": "b"}}\n')
        journal.append(b'{"row": {"id": "c"}}\n{"row": {"id"')  # a power cut mid-line
        assert [e["row"]["id"] for e in journal.entries()] == ["a", "b", "c"]
        journal.clear(previous)
        assert [e["row"]["id"] for e in journal.entries()] == ["b", "c"]
        assert IntentJournal.open(str(tmp_path / "x.db")) is None  # held
    finally:
        journal.close()
    reopened = IntentJournal.open(str(tmp_path / "x.db"))
    assert reopened is not None
    reopened.close()


async def test_a_caller_cancelled_while_its_batch_is_stored_leaves_the_batch_to_finish(
    database: Database, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = await database.jobs.insert_intent(_intent())
    release = asyncio.Event()

    async def slow(*args: Any, **kwargs: Any) -> Any:
        result = await write_one(*args, **kwargs)
        await release.wait()  # committed; the answer is not back yet
        return result

    monkeypatch.setattr(jobs_module, "write_one", slow)
    reader = asyncio.create_task(database.jobs.get_any(record.id))
    await asyncio.sleep(0.01)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    release.set()
    await asyncio.sleep(0.01)
    assert database.jobs._pending == {}  # the batch finished on its own: known stored, not put back
    assert _journal_bytes(db_path) == 0 and _table(db_path) == {record.id: ("intent", 1)}


async def test_concurrent_creates_completions_and_reads_all_finish(database: Database, db_path: Path) -> None:
    """Batches overlap (one at a time); a caller arriving as one ends must not spin on it."""
    rng = random.Random(7)

    async def create() -> str:
        record = await database.jobs.insert_intent(_intent())
        await asyncio.sleep(rng.random() / 500)
        completion = Completion(record.id, "n-" + record.id, "queued", SNAPSHOT, 5)
        assert await database.jobs.complete_many([completion]) == 1
        return record.id

    async def read() -> None:
        for _ in range(20):
            await database.jobs.page("o", limit=5)
            await asyncio.sleep(rng.random() / 500)

    async def all_of_them() -> list[Any]:
        return await asyncio.gather(*(create() for _ in range(300)), *(read() for _ in range(4)))

    created = [job_id for job_id in await asyncio.wait_for(all_of_them(), 20) if job_id]
    assert len(created) == 300
    assert set(_table(db_path)) == set(created) and {s for s, _ in _table(db_path).values()} == {"created"}
