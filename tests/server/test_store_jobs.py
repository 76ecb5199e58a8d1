"""`JobRepository.by_native_ids`: which of a provider's listed jobs the registry holds. On SQLite
inline it remembers the ids it found absent; that memory never hides a job completed later."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tunegate.server.store import _jobs as jobs_module
from tunegate.server.store import migrate
from tunegate.server.store._database import Engine, create_engine
from tunegate.server.store._inline import InlineConnection
from tunegate.server.store._jobs import JobRepository
from tunegate.server.store._records import JobRecord


@pytest.fixture
async def engine(tmp_path: Path, database_url: str | None) -> AsyncIterator[Engine]:
    engine = create_engine(database_url or f"sqlite:///{tmp_path / 'jobs.db'}")
    await migrate(engine)
    try:
        yield engine
    finally:
        await engine.dispose()


def _intent(owner: str = "o", account_key: str = "acct") -> JobRecord:
    return JobRecord(
        id="ftjob-" + secrets.token_hex(12),
        owner=owner,
        provider="openai",
        account_key=account_key,
        state="intent",
        status="validating_files",
        request={"model": "m", "training_file": "file-x"},
        request_hash="h",
        created_at=1,
        updated_at=1,
        attempted=True,
    )


async def _created(repo: JobRepository, native_id: str, **scope: str) -> JobRecord:
    record = await repo.insert_intent(_intent(**scope))
    snapshot = {"id": record.id, "object": "fine_tuning.job", "status": "queued"}
    assert await repo.complete(record.id, native_id=native_id, status="queued", snapshot=snapshot, now=2)
    return record


def _count_probes(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The native ids of every probe that reaches SQLite."""
    probes: list[list[str]] = []
    real = InlineConnection._run_prepared

    def run(self: InlineConnection, statement: Any, parameters: Any) -> Any:
        if statement is jobs_module._BY_NATIVE_IDS:
            probes.append(list(parameters["native_ids"]))
        return real(self, statement, parameters)

    monkeypatch.setattr(InlineConnection, "_run_prepared", run)
    return probes


async def test_a_job_completed_after_its_id_was_probed_absent_is_found(engine: Engine) -> None:
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


async def test_ids_known_absent_are_not_asked_again_on_sqlite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
    await migrate(engine)
    try:
        repo = JobRepository(engine)
        probes = _count_probes(monkeypatch)
        await _created(repo, "n-known")
        page = ["n-1", "n-2", "n-known"]
        assert list(await repo.by_native_ids("o", "acct", page)) == ["n-known"]
        assert list(await repo.by_native_ids("o", "acct", page)) == ["n-known"]
        assert await repo.by_native_ids("o", "acct", ["n-1", "n-2"]) == {}
        assert probes == [page, ["n-known"]]  # the third call asked nothing
        assert await repo.by_native_ids("o2", "acct", ["n-1"]) == {}  # another scope asks itself
        assert probes[-1] == ["n-1"]
        await _created(repo, "n-1")  # completing forgets what was known absent
        assert list(await repo.by_native_ids("o", "acct", ["n-1", "n-2"])) == ["n-1"]
        assert probes[-1] == ["n-1"]
    finally:
        await engine.dispose()


async def test_the_memory_of_absent_ids_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs_module, "ABSENT_MEMORY", 50)
    engine = create_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
    await migrate(engine)
    try:
        repo = JobRepository(engine)
        probes = _count_probes(monkeypatch)
        for start in range(0, 200, 20):
            await repo.by_native_ids("o", "acct", [f"n-{i}" for i in range(start, start + 20)])
        assert repo._absent is not None and len(repo._absent) == 50
        await repo.by_native_ids("o", "acct", ["n-0", "n-199"])  # n-0 was forgotten, n-199 not
        assert probes[-1] == ["n-0"]
    finally:
        await engine.dispose()
