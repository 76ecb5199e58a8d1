"""The migrations build exactly the schema the repositories are written against, and the
registry's hot lookups are index probes, not scans of an owner's history."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.ext.asyncio import AsyncEngine
from tunegate.server.store import migrate
from tunegate.server.store._database import create_engine
from tunegate.server.store._jobs import _BY_NATIVE_IDS, _PAGE, _PAGE_AFTER
from tunegate.server.store._schema import jobs, metadata


def _differences(connection: sa.Connection) -> list[Any]:
    return list(compare_metadata(MigrationContext.configure(connection), metadata))


async def test_migrations_build_the_declared_schema(tmp_path: Path, database_url: str | None) -> None:
    engine = create_engine(database_url or f"sqlite:///{tmp_path / 'schema.db'}")
    try:
        await migrate(engine)
        async with engine.connect() as conn:
            assert await conn.run_sync(_differences) == []
    finally:
        await engine.dispose()


@pytest.mark.parametrize(
    "query",
    [
        _BY_NATIVE_IDS.params(owner="o", account_key="a", native_ids=["ftjob-1", "ftjob-2"]),
        jobs.select().where(jobs.c.owner == "o", jobs.c.provider == "openai", jobs.c.native_id == "n"),
    ],
    ids=["by_native_ids", "by_native_id"],
)
async def test_native_id_lookups_probe_an_index_on_owner_and_native_id(
    tmp_path: Path, query: sa.Select[Any]
) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'plan.db'}")
    try:
        await migrate(engine)
        sql = str(query.compile(engine.sync_engine, compile_kwargs={"literal_binds": True}))
        async with engine.connect() as conn:
            plan = (await conn.execute(sa.text(f"EXPLAIN QUERY PLAN {sql}"))).all()
        details = " ".join(str(row[-1]) for row in plan)
        assert "ix_jobs_owner_native (owner=? AND native_id=?)" in details, details
    finally:
        await engine.dispose()


async def test_a_listing_page_reads_the_owners_newest_entries_of_its_index(
    tmp_path: Path, database_url: str | None
) -> None:
    """An owner holding most of the jobs while another owner added the newest ones: the page's
    keys come from `ix_jobs_owner_seq` — on PostgreSQL from the index alone once vacuumed, as
    autovacuum leaves a table — not from walking the primary key past the other owner's rows."""
    engine = create_engine(database_url or f"sqlite:///{tmp_path / 'listing.db'}")
    owner, other = "o-listing", "o-listing-other"
    row = {
        "provider": "openai",
        "account_key": "a",
        "state": "created",
        "status": "succeeded",
        "request": "{}",
        "request_hash": "h",
        "attempted": True,
        "created_at": 1,
        "updated_at": 1,
    }
    mine = [{**row, "owner": owner, "id": f"ftjob-listing-{n}"} for n in range(4000)]
    theirs = [{**row, "owner": other, "id": f"ftjob-listing-other-{n}"} for n in range(1000)]
    parameters = {"owner": owner, "limit": 21, "hidden_states": ["failed_to_create"]}
    try:
        await migrate(engine)
        async with engine.begin() as conn:
            await conn.execute(jobs.insert(), mine)
            await conn.execute(jobs.insert(), theirs)
        if isinstance(engine, AsyncEngine):  # PostgreSQL; VACUUM runs outside a transaction
            async with engine.connect() as conn:
                autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
                await autocommit.execute(sa.text("VACUUM ANALYZE jobs"))
        for query in (_PAGE.params(parameters), _PAGE_AFTER.params(parameters, after="ftjob-listing-2000")):
            sql = str(query.compile(engine.sync_engine, compile_kwargs={"literal_binds": True}))
            explain = "EXPLAIN QUERY PLAN" if engine.dialect.name == "sqlite" else "EXPLAIN"
            async with engine.connect() as conn:
                plan = " ".join(
                    str(row[-1]) for row in (await conn.execute(sa.text(f"{explain} {sql}"))).all()
                )
            if engine.dialect.name == "sqlite":
                assert "SEARCH listed USING INDEX ix_jobs_owner_seq (owner=?" in plan, plan
            else:
                assert "Index Only Scan Backward using ix_jobs_owner_seq on jobs listed" in plan, plan
    finally:
        async with engine.begin() as conn:
            await conn.execute(jobs.delete().where(jobs.c.owner.in_([owner, other])))
        await engine.dispose()


def _predicate(index_ddl: str) -> str:
    """The WHERE clause of a CREATE INDEX as SQLite or PostgreSQL shows it, without parentheses
    (PostgreSQL writes `WHERE (x IS NOT NULL)`); empty for a full index."""
    _, _, where = index_ddl.partition(" WHERE ")
    return where.replace("(", "").replace(")", "").strip()


async def test_intents_add_no_null_entries_to_the_request_and_native_id_indexes(
    tmp_path: Path, database_url: str | None
) -> None:
    """Partial indexes (migration 0005): a job without an idempotency key or a native id is in
    neither index, and a repeated (owner, request_id) is still refused."""
    engine = create_engine(database_url or f"sqlite:///{tmp_path / 'partial.db'}")
    row = {
        "owner": "o",
        "provider": "openai",
        "account_key": "a",
        "state": "intent",
        "status": "validating_files",
        "request": "{}",
        "request_hash": "h",
        "attempted": True,
        "created_at": 1,
        "updated_at": 1,
    }
    try:
        await migrate(engine)
        async with engine.begin() as conn:
            await conn.execute(jobs.delete())
            await conn.execute(jobs.insert(), [{**row, "id": "ftjob-a"}, {**row, "id": "ftjob-b"}])
            await conn.execute(jobs.insert(), {**row, "id": "ftjob-c", "request_id": "k", "native_id": "n"})
        if engine.dialect.name == "sqlite":
            definitions = "SELECT name, sql FROM sqlite_master WHERE tbl_name = 'jobs' AND type = 'index'"
        else:
            definitions = "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'jobs'"
        async with engine.connect() as conn:
            ddl = {name: sql for name, sql in (await conn.execute(sa.text(definitions))).all()}
            # The rows the native-id index holds under that predicate: the one job with a native id.
            entries = await conn.scalar(
                sa.text("SELECT count(*) FROM jobs WHERE owner = 'o' AND native_id IS NOT NULL")
            )
        assert _predicate(ddl["ix_jobs_owner_request_id"]) == "request_id IS NOT NULL"
        assert _predicate(ddl["ix_jobs_owner_native"]) == "native_id IS NOT NULL"
        assert entries == 1
        with pytest.raises(sa.exc.IntegrityError):
            async with engine.begin() as conn:
                await conn.execute(jobs.insert(), {**row, "id": "ftjob-d", "request_id": "k"})
    finally:
        async with engine.begin() as conn:
            await conn.execute(jobs.delete())
        await engine.dispose()
