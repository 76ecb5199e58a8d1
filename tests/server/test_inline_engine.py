"""SQLite inline: prepared statements answer exactly what SQLAlchemy's own execution answers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import sqlalchemy as sa

from server.store._database import create_engine
from server.store._inline import InlineEngine, lookup, prepared

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
    async with engine.begin() as conn:
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
