"""The `job_polls` repository: the job monitor's schedule and leases (rules live in
`tunegate.server.jobs._monitor`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from tunegate.server.store._database import Engine
from tunegate.server.store._schema import ACTIVE_JOBS, job_polls, jobs

__all__ = ["PollRepository"]


class PollRepository:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def claim(
        self,
        *,
        now_ms: int,
        lease_ms: int,
        limit: int,
        holder: str,
        terminal: Iterable[str],
        followed: Iterable[str],
        prefixes: Iterable[str],
        first_after_ms: int = 0,
    ) -> list[tuple[str, float]]:
        """Leases up to `limit` due jobs to `holder` until `now_ms + lease_ms`; returns (job id,
        its last interval). Due: created, not in a `terminal` status, on an account the gateway
        can rebuild (a key in `followed`, or starting with one of `prefixes`), and either without
        a schedule row and created `first_after_ms` ago, or with one whose time has come and
        whose lease is free. On PostgreSQL the candidate rows
        are locked with `SKIP LOCKED`, so replicas claiming at once never take the same job."""
        p = job_polls
        rebuildable = sa.or_(
            jobs.c.account_key.in_(list(followed)), *(jobs.c.account_key.startswith(x) for x in prefixes)
        )
        query = (
            sa.select(jobs.c.id, p.c.interval, p.c.job_id.label("scheduled"))
            .select_from(jobs.outerjoin(p, p.c.job_id == jobs.c.id))
            .where(
                # Spelled as the partial index `ix_jobs_active` spells it, so PostgreSQL uses it
                # whatever the bound parameters: the claim reads only the unfinished jobs.
                sa.text(ACTIVE_JOBS),
                jobs.c.state == "created",
                jobs.c.status.not_in(list(terminal)),
                rebuildable,
                sa.or_(
                    sa.and_(p.c.job_id.is_(None), jobs.c.created_at * 1000 + first_after_ms <= now_ms),
                    sa.and_(
                        p.c.next_at <= now_ms, sa.or_(p.c.lease_until.is_(None), p.c.lease_until <= now_ms)
                    ),
                ),
            )
            .order_by(sa.func.coalesce(p.c.next_at, 0), jobs.c.seq)
            .limit(limit)
        )
        claimed: list[tuple[str, float]] = []
        async with self._engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                query = query.with_for_update(of=jobs, skip_locked=True)
            # The SELECT locks only `jobs` rows (the nullable side of an outer join cannot be
            # locked): its `job_polls` values may be stale by the time a row is leased — another
            # replica may have leased, polled and rescheduled the job meanwhile — so each lease
            # re-checks that the job is still due and free.
            for job_id, interval, scheduled in (await conn.execute(query)).all():
                if await self._lease(conn, job_id, scheduled is not None, now_ms, now_ms + lease_ms, holder):
                    claimed.append((job_id, float(interval or 0.0)))
        return claimed

    @staticmethod
    async def _lease(conn: Any, job_id: str, scheduled: bool, now_ms: int, until: int, holder: str) -> bool:
        if scheduled:
            result = await conn.execute(
                job_polls.update()
                .where(
                    job_polls.c.job_id == job_id,
                    job_polls.c.next_at <= now_ms,
                    sa.or_(job_polls.c.lease_until.is_(None), job_polls.c.lease_until <= now_ms),
                )
                .values(lease_until=until, holder=holder)
            )
            return bool(result.rowcount == 1)
        insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        result = await conn.execute(
            insert(job_polls)
            .values(job_id=job_id, next_at=now_ms, interval=0.0, lease_until=until, holder=holder, polls=0)
            .on_conflict_do_nothing(index_elements=["job_id"])  # another replica scheduled it first
        )
        return bool(result.rowcount == 1)

    async def schedule_many(self, holder: str, schedules: Iterable[tuple[str, int, float]]) -> None:
        """Releases `holder`'s leases and sets each job's next poll — (job id, next poll in epoch
        ms, interval) — in one transaction."""
        rows = [{"job": job_id, "next_at": at, "interval": interval} for job_id, at, interval in schedules]
        if not rows:
            return
        query = (
            job_polls.update()
            .where(job_polls.c.job_id == sa.bindparam("job"), job_polls.c.holder == holder)
            .values(
                next_at=sa.bindparam("next_at"),
                interval=sa.bindparam("interval"),
                lease_until=None,
                holder=None,
                polls=job_polls.c.polls + 1,
            )
        )
        async with self._engine.begin() as conn:
            await conn.execute(query, rows)

    async def polls(self, job_id: str) -> int:
        query = sa.select(job_polls.c.polls).where(job_polls.c.job_id == job_id)
        async with self._engine.connect() as conn:
            value = (await conn.execute(query)).scalar()
        return int(value or 0)
