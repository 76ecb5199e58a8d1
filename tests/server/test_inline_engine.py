"""SQLite inline: prepared statements answer exactly what SQLAlchemy's own execution answers."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from tunegate.server.store._database import create_engine
from tunegate.server.store._inline import InlineEngine, lookup, prepared

_meta = sa.MetaData()
_things = sa.Table(
    "things",
    _meta,
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("owner", sa.String, nullable=False),
    sa.Column("name", sa.String),
    sa.Column("flag", sa.Boolean, nullable=False),
)
_BY_OWNER = lookup(_things, "owner")
_FIRST_TWO = prepared(
    sa.select(_things.c.name).where(_things.c.owner == sa.bindparam("owner")).order_by(_things.c.seq).limit(2)
)


async def _engine(tmp_path: Path) -> InlineEngine:
    engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    assert isinstance(engine, InlineEngine)
    async with engine.begin(grouped=False) as conn:  # no group yet: the next writes group
        await conn.run_sync(_meta.create_all)
        await conn.execute(
            _things.insert(),
            [{"owner": "a", "name": f"n{i}", "flag": i % 2 == 0} for i in range(3)]
            + [{"owner": "b", "name": None, "flag": True}],
        )
    return engine


async def test_prepared_rows_match_sqlalchemy(tmp_path: Path) -> None:
    engine = await _engine(tmp_path)
    try:
        async with engine.connect() as conn:
            fast = (await conn.execute(_BY_OWNER, {"owner": "a"})).all()
            slow = (await conn.execute(_things.select().where(_things.c.owner == "a"))).all()
            assert [row._asdict() | {"flag": bool(row.flag)} for row in fast] == [
                row._asdict() for row in slow
            ]
            assert (await conn.execute(_FIRST_TWO, {"owner": "a"})).all() == [("n0",), ("n1",)]  # bound limit
            assert (await conn.execute(_FIRST_TWO, {"owner": "a"})).scalar() == "n0"
            assert (await conn.execute(_BY_OWNER, {"owner": "nobody"})).first() is None
            assert (await conn.execute(_FIRST_TWO, {"owner": "nobody"})).scalar() is None
    finally:
        await engine.dispose()


async def test_blocks_take_turns(tmp_path: Path) -> None:
    # A block that awaits something else mid-way is never interleaved with another block.
    engine = await _engine(tmp_path)
    order: list[str] = []

    async def block(name: str) -> None:
        async with engine.begin() as conn:
            order.append(f"{name} in")
            await asyncio.sleep(0.01)
            await conn.execute(_things.insert().values(owner=name, flag=False))
            order.append(f"{name} out")

    try:
        await asyncio.gather(block("x"), block("y"))
        assert order == ["x in", "x out", "y in", "y out"]
    finally:
        await engine.dispose()


_BY_NAMES = prepared(_things.select().where(_things.c.name.in_(sa.bindparam("names", expanding=True))))
_RENAME = prepared(_things.update().where(_things.c.owner == sa.bindparam("owner")).values(name="z"))


async def test_prepared_in_lists_and_writes(tmp_path: Path) -> None:
    engine = await _engine(tmp_path)
    try:
        async with engine.connect() as conn:
            found = (await conn.execute(_BY_NAMES, {"names": ["n2", "n0", "absent"]})).all()
            assert sorted(row.name for row in found) == ["n0", "n2"]
            assert (await conn.execute(_BY_NAMES, {"names": []})).all() == []
        async with engine.begin() as conn:
            assert (await conn.execute(_RENAME, {"owner": "a"})).rowcount == 3
        async with engine.connect() as conn:  # committed
            assert (await conn.execute(_BY_NAMES, {"names": ["z"]})).all() != []
        try:
            async with engine.begin() as conn:
                await conn.execute(_RENAME, {"owner": "b"})
                raise RuntimeError("abandon the block")
        except RuntimeError:
            pass
        async with engine.connect() as conn:  # rolled back
            rows = (await conn.execute(_BY_OWNER, {"owner": "b"})).all()
            assert [row.name for row in rows] == [None]
    finally:
        await engine.dispose()


_SET_NAME = prepared(  # a literal IN, as the jobs' completion has
    _things.update()
    .where(_things.c.seq == sa.bindparam("seq"), _things.c.owner.in_(["a", "b"]))
    .values(name=sa.bindparam("name"))
)
_SET_OWNER = prepared(
    _things.update().where(_things.c.seq == sa.bindparam("seq")).values(owner=sa.bindparam("owner"))
)


async def test_a_prepared_write_with_a_list_of_parameters_runs_once_per_set(tmp_path: Path) -> None:
    engine = await _engine(tmp_path)
    try:
        rows = [{"seq": 1, "name": "x"}, {"seq": 4, "name": "w"}, {"seq": 99, "name": "nobody"}]
        async with engine.begin(single_statement=True) as conn:
            assert (await conn.execute(_SET_NAME, rows)).rowcount == 2  # changed rows, summed
        async with engine.connect() as conn:
            assert [(r.seq, r.name) for r in (await conn.execute(_BY_OWNER, {"owner": "b"})).all()] == [
                (4, "w")
            ]
            assert (await conn.execute(_BY_NAMES, {"names": ["x"]})).all() != []
        # A set that fails half-way (NOT NULL) keeps nothing of the statement: not even the first set.
        with pytest.raises(sa.exc.IntegrityError):
            async with engine.begin(single_statement=True) as conn:
                await conn.execute(_SET_OWNER, [{"seq": 1, "owner": "c"}, {"seq": 2, "owner": None}])
        assert _committed(tmp_path, "c") == 0
        with pytest.raises(ValueError, match="same SQL"):
            async with engine.begin(single_statement=True) as conn:
                await conn.execute(_BY_NAMES, [{"names": ["a"]}, {"names": ["a", "b"]}])
    finally:
        await engine.dispose()


# -- group commit ------------------------------------------------------------------------------

_parents = sa.Table("parents", _meta, sa.Column("id", sa.Integer, primary_key=True))
_children = sa.Table(
    "children",
    _meta,
    sa.Column("id", sa.Integer, primary_key=True),
    # Checked at COMMIT: the one way to make SQLite refuse a COMMIT on demand.
    sa.Column("parent", sa.Integer, sa.ForeignKey("parents.id", deferrable=True, initially="DEFERRED")),
)
_ADD = prepared(_things.insert().values(owner=sa.bindparam("owner"), flag=False))


def _committed(tmp_path: Path, owner: str) -> int:
    """Rows of `owner` as another connection sees them: committed work only."""
    with sqlite3.connect(tmp_path / "x.db") as other:
        (count,) = other.execute("SELECT count(*) FROM things WHERE owner = ?", (owner,)).fetchone()
    return int(count)


async def _statements(engine: InlineEngine) -> list[str]:
    """Start recording the SQL the engine's driver runs."""
    seen: list[str] = []
    async with engine.connect() as conn:
        driver = conn.sync_connection.connection.driver_connection
        assert isinstance(driver, sqlite3.Connection)
        driver.set_trace_callback(seen.append)
    return seen


async def test_concurrent_writes_share_one_commit_and_are_committed_when_their_block_ends(
    tmp_path: Path,
) -> None:
    engine = await _engine(tmp_path)
    seen = await _statements(engine)

    async def write(i: int) -> int:
        async with engine.begin(single_statement=True) as conn:
            await conn.execute(_ADD, {"owner": f"w{i}"})
        return _committed(tmp_path, f"w{i}")  # visible to everyone once the block has ended

    try:
        assert await asyncio.gather(*(write(i) for i in range(10))) == [1] * 10
        assert sum(sql == "COMMIT" for sql in seen) == 1
        assert not any("SAVEPOINT" in sql for sql in seen)  # one statement needs none
    finally:
        await engine.dispose()


async def test_writes_one_at_a_time_commit_at_once_and_a_burst_after_them_groups_again(
    tmp_path: Path,
) -> None:
    engine = await _engine(tmp_path)
    seen = await _statements(engine)
    loop = asyncio.get_running_loop()

    async def write(owner: str) -> None:
        async with engine.begin(single_statement=True) as conn:
            await conn.execute(_ADD, {"owner": owner})

    try:
        await write("first")  # no history: it waits for the end of the turn, alone
        assert seen.count("COMMIT") == 1
        for i in range(3):  # after a group of one, each write commits before the loop turns
            await asyncio.sleep(0)  # writes one at a time: a turn (at least) between them
            turned: list[bool] = []
            loop.call_soon(turned.append, True)
            await write(f"serial{i}")
            assert not turned and _committed(tmp_path, f"serial{i}") == 1
        assert seen.count("COMMIT") == 4
        # Ten writes in one turn: the first cannot know the others follow; they share one.
        await asyncio.gather(*(write(f"burst{i}") for i in range(10)))
        assert seen.count("COMMIT") == 6
        await asyncio.gather(*(write(f"again{i}") for i in range(10)))  # the last group had nine
        assert seen.count("COMMIT") == 7
        assert sum(_committed(tmp_path, f"again{i}") for i in range(10)) == 10
    finally:
        await engine.dispose()


async def test_a_write_that_would_commit_at_once_runs_at_once_without_a_block(tmp_path: Path) -> None:
    engine = await _engine(tmp_path)
    seen = await _statements(engine)
    try:
        # No history: a block alone waits for the end of the turn, so the write is not run now.
        assert engine.write_now(_ADD, {"owner": "first"}) is None and _committed(tmp_path, "first") == 0
        async with engine.begin(single_statement=True) as conn:
            await conn.execute(_ADD, {"owner": "first"})
        await asyncio.sleep(0)
        rows = engine.write_now(_ADD, {"owner": "now"})
        assert rows is not None and rows.rowcount == 1 and rows.inserted_primary_key is not None
        assert _committed(tmp_path, "now") == 1 and seen[-1] == "COMMIT"  # committed on return
        # A second write in the same turn joins the turn's group (as a block would): not now.
        assert engine.write_now(_ADD, {"owner": "second"}) is None
        await asyncio.sleep(0)
        async with engine.connect():  # a block is running: not now
            assert engine.write_now(_ADD, {"owner": "beside"}) is None
        ad_hoc = _things.insert().values(owner="ad hoc", flag=False)  # not prepared: never
        assert engine.write_now(ad_hoc, {}) is None
        # A statement SQLite refuses is undone and raised; the engine goes on.
        with pytest.raises(sa.exc.IntegrityError):
            engine.write_now(_SET_OWNER, [{"seq": 1, "owner": "c"}, {"seq": 2, "owner": None}])
        assert _committed(tmp_path, "c") == 0
        await asyncio.sleep(0)
        assert engine.write_now(_SET_OWNER, {"seq": 1, "owner": "c"}) is not None
        assert _committed(tmp_path, "c") == 1
    finally:
        await engine.dispose()


async def test_a_failed_block_undoes_only_itself(tmp_path: Path) -> None:
    engine = await _engine(tmp_path)

    async def good(owner: str) -> None:
        async with engine.begin() as conn:
            await conn.execute(_ADD, {"owner": owner})
            await conn.execute(_ADD, {"owner": owner})

    async def bad() -> None:
        async with engine.begin() as conn:
            await conn.execute(_ADD, {"owner": "bad"})
            raise RuntimeError("after a write")

    async def duplicate() -> None:  # one statement, refused by SQLite: nothing to undo
        async with engine.begin(single_statement=True) as conn:
            await conn.execute(_things.insert().values(seq=1, owner="dup", flag=False))

    try:
        results = await asyncio.gather(good("g1"), bad(), duplicate(), good("g2"), return_exceptions=True)
        assert results[0] is None and results[3] is None
        assert isinstance(results[1], RuntimeError)
        assert isinstance(results[2], sa.exc.IntegrityError)
        assert [_committed(tmp_path, owner) for owner in ("g1", "bad", "dup", "g2")] == [2, 0, 0, 2]
    finally:
        await engine.dispose()


async def test_a_single_statement_block_that_fails_after_its_write_fails_its_group(tmp_path: Path) -> None:
    engine = await _engine(tmp_path)

    async def good() -> None:
        async with engine.begin(single_statement=True) as conn:
            await conn.execute(_ADD, {"owner": "good"})

    async def bad() -> None:
        async with engine.begin(single_statement=True) as conn:
            await conn.execute(_ADD, {"owner": "bad"})
            raise ValueError("after the statement")

    async def twice() -> None:
        async with engine.begin(single_statement=True) as conn:
            await conn.execute(_ADD, {"owner": "twice"})
            await conn.execute(_ADD, {"owner": "twice"})

    try:
        results = await asyncio.gather(good(), bad(), return_exceptions=True)
        # The bad block's row cannot be undone alone: its whole group is rolled back and fails.
        assert [type(r) for r in results] == [ValueError, ValueError]
        assert _committed(tmp_path, "good") == _committed(tmp_path, "bad") == 0
        with pytest.raises(RuntimeError, match="second statement"):
            await twice()
        assert _committed(tmp_path, "twice") == 0
        await good()  # the engine goes on
        assert _committed(tmp_path, "good") == 1
    finally:
        await engine.dispose()


async def test_a_refused_commit_fails_every_block_of_its_group(tmp_path: Path) -> None:
    engine = await _engine(tmp_path)
    async with engine.begin(grouped=False) as conn:
        await conn.run_sync(_meta.create_all)
        await conn.execute(_parents.insert(), [{"id": 1}, {"id": 2}])

    child_insert = prepared(_children.insert().values(parent=sa.bindparam("parent")))

    async def child(parent: int) -> None:
        async with engine.begin() as conn:
            if parent % 2:  # through SQLAlchemy's execution and the prepared path: one error class
                await conn.execute(_children.insert().values(parent=parent))
            else:
                await conn.execute(child_insert, {"parent": parent})

    try:
        for pair in ((1, 99), (2, 98)):
            results = await asyncio.gather(*(child(parent) for parent in pair), return_exceptions=True)
            assert all(isinstance(r, sa.exc.IntegrityError) for r in results), results
        async with engine.connect() as conn:
            assert (await conn.execute(sa.select(sa.func.count()).select_from(_children))).scalar() == 0
        await child(1)
        async with engine.connect() as conn:
            assert (await conn.execute(sa.select(sa.func.count()).select_from(_children))).scalar() == 1
    finally:
        await engine.dispose()


async def test_reads_see_committed_work_only(tmp_path: Path) -> None:
    engine = await _engine(tmp_path)
    seen_by_others: list[int] = []

    async def write() -> None:
        async with engine.begin() as conn:
            await conn.execute(_ADD, {"owner": "w"})

    async def read() -> None:
        async with engine.connect() as conn:  # queued behind the write, before its group's COMMIT
            rows = (await conn.execute(_BY_OWNER, {"owner": "w"})).all()
            seen_by_others.append(_committed(tmp_path, "w"))
            assert len(rows) == 1

    try:
        await asyncio.gather(write(), read())
        assert seen_by_others == [1]  # the read committed the open group first
    finally:
        await engine.dispose()


async def test_checkpoints_run_in_the_background(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every `checkpoint_every` commits the WAL is copied back by a worker thread (the loop's
    connection keeps SQLite's own threshold only as a backstop)."""
    engine = await _engine(tmp_path)
    engine._checkpoint_every = 5
    runs: list[tuple[int, tuple[int, int, int]]] = []
    original = engine._run_checkpoint

    def watched() -> tuple[int, int, int]:
        result = original()
        runs.append((threading.get_ident(), result))
        return result

    monkeypatch.setattr(engine, "_run_checkpoint", watched)
    try:
        for i in range(12):
            async with engine.begin() as conn:
                await conn.execute(_things.insert(), {"owner": "c", "name": f"w{i}", "flag": False})
            running = engine._checkpoint  # one runs at a time: let each end before the next commit
            if running is not None:
                await running
        assert len(runs) == 2  # after the 5th and 10th commits
        assert all(thread != threading.get_ident() for thread, _ in runs)
        assert all(busy == 0 and copied == frames > 0 for _, (busy, frames, copied) in runs)
        async with engine.connect() as conn:
            assert (await conn.scalar(sa.text("PRAGMA wal_autocheckpoint"))) == 4000
            assert len((await conn.execute(_BY_OWNER, {"owner": "c"})).all()) == 12
    finally:
        await engine.dispose()
    assert engine._checkpointer is None  # closed with the engine
    with sqlite3.connect(tmp_path / "x.db") as check:
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
