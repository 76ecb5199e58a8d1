"""SQLite inline: a `begin()` block is committed when it ends and rolled back when it fails, a
refused COMMIT leaves the engine usable, and blocks never interleave."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa
from tunegate.server.store._database import create_engine
from tunegate.server.store._inline import InlineEngine

_meta = sa.MetaData()
_things = sa.Table(
    "things",
    _meta,
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("owner", sa.String, nullable=False),
    sa.Column("name", sa.String),
)
_parents = sa.Table("parents", _meta, sa.Column("id", sa.Integer, primary_key=True))
_children = sa.Table(
    "children",
    _meta,
    sa.Column("id", sa.Integer, primary_key=True),
    # Checked at COMMIT: the one way to make SQLite refuse a COMMIT on demand.
    sa.Column("parent", sa.Integer, sa.ForeignKey("parents.id", deferrable=True, initially="DEFERRED")),
)


async def _engine(tmp_path: Path) -> InlineEngine:
    engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    assert isinstance(engine, InlineEngine)
    async with engine.begin() as conn:
        await conn.run_sync(_meta.create_all)
        await conn.execute(_parents.insert(), [{"id": 1}])
    return engine


def _committed(tmp_path: Path, owner: str) -> int:
    """Rows of `owner` as another connection sees them: committed work only."""
    with sqlite3.connect(tmp_path / "x.db") as other:
        (count,) = other.execute("SELECT count(*) FROM things WHERE owner = ?", (owner,)).fetchone()
    return int(count)


async def test_a_block_is_committed_when_it_ends_and_rolled_back_when_it_fails(tmp_path: Path) -> None:
    engine = await _engine(tmp_path)
    try:
        async with engine.begin() as conn:
            result = await conn.execute(_things.insert().values(owner="a", name="x"))
            assert result.inserted_primary_key == (1,)
            await conn.execute(_things.insert().values(owner="a", name="y"))
            assert _committed(tmp_path, "a") == 0  # not before the block ends
        assert _committed(tmp_path, "a") == 2
        with pytest.raises(RuntimeError, match="abandon"):
            async with engine.begin() as conn:
                await conn.execute(_things.update().where(_things.c.owner == "a").values(owner="b"))
                raise RuntimeError("abandon the block")
        with pytest.raises(sa.exc.IntegrityError):
            async with engine.begin() as conn:
                await conn.execute(_things.insert().values(owner="c"))
                await conn.execute(_things.insert().values(seq=1, owner="c"))  # a duplicate key
        assert [_committed(tmp_path, owner) for owner in ("a", "b", "c")] == [2, 0, 0]
        async with engine.connect() as conn:
            rows = (await conn.execute(sa.select(_things.c.name).order_by(_things.c.seq))).all()
            assert [row.name for row in rows] == ["x", "y"]
            assert await conn.scalar(sa.text("PRAGMA journal_mode")) == "wal"
            assert await conn.scalar(sa.text("PRAGMA foreign_keys")) == 1
    finally:
        await engine.dispose()


async def test_a_refused_commit_raises_and_the_engine_goes_on(tmp_path: Path) -> None:
    engine = await _engine(tmp_path)

    async def child(parent: int) -> None:
        async with engine.begin() as conn:
            await conn.execute(_children.insert().values(parent=parent))

    try:
        with pytest.raises(sa.exc.IntegrityError):
            await child(99)  # no such parent: refused at COMMIT
        await child(1)
        async with engine.connect() as conn:
            assert await conn.scalar(sa.select(sa.func.count()).select_from(_children)) == 1
    finally:
        await engine.dispose()


async def test_a_block_entered_while_another_is_open_fails_instead_of_interleaving(tmp_path: Path) -> None:
    engine = await _engine(tmp_path)
    entered = asyncio.Event()
    release = asyncio.Event()

    async def awaits_something_else() -> None:
        async with engine.begin() as conn:
            await conn.execute(_things.insert().values(owner="slow"))
            entered.set()
            await release.wait()  # what a block must never do

    try:
        slow = asyncio.create_task(awaits_something_else())
        await entered.wait()
        with pytest.raises(RuntimeError, match="while another was open"):
            async with engine.connect():
                pass
        release.set()
        await slow
        assert _committed(tmp_path, "slow") == 1
        async with engine.connect() as conn:  # the engine goes on
            assert await conn.scalar(sa.select(sa.func.count()).select_from(_things)) == 1
    finally:
        await engine.dispose()
