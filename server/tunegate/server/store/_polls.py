"""The `job_polls` repository: the job monitor's schedule and leases (rules live in
`tunegate.server.jobs._monitor`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
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
        sweeps: Callable[[str], bool] | None = None,
        sweep_limit: int = 0,
    ) -> list[tuple[str, float]]:
        """Leases up to `limit` due jobs to `holder` until `now_ms + lease_ms`; returns (job id,
        its last interval). Due: created, not in a `terminal` status, on an account the gateway
        can rebuild (a key in `followed`, or starting with one of `prefixes`), and either without
        a schedule row and created `first_after_ms` ago, or with one whose time has come and
        whose lease is free.

        An account whose provider `sweeps` (its listing answers whole jobs) that has a due job
        also has up to `sweep_limit` of its other due jobs leased with it, beyond `limit`, so the
        monitor reads them all from one walk over the account's listing.

        On PostgreSQL the candidate rows are locked with `SKIP LOCKED`, so replicas claiming at
        once never take the same job."""
        p = job_polls
        rebuildable = sa.or_(
            jobs.c.account_key.in_(list(followed)), *(jobs.c.account_key.startswith(x) for x in prefixes)
        )
        free = sa.or_(p.c.lease_until.is_(None), p.c.lease_until <= now_ms)
        # Spelled as the partial index `ix_jobs_active` spells it, so PostgreSQL uses it whatever
        # the bound parameters: the claim reads only the unfinished jobs.
        active = (sa.text(ACTIVE_JOBS), jobs.c.state == "created", jobs.c.status.not_in(list(terminal)))
        due = (
            sa.select(jobs.c.id, jobs.c.provider, jobs.c.account_key, p.c.job_id.label("scheduled"))
            .select_from(jobs.outerjoin(p, p.c.job_id == jobs.c.id))
            .where(
                *active,
                rebuildable,
                sa.or_(
                    sa.and_(p.c.job_id.is_(None), jobs.c.created_at * 1000 + first_after_ms <= now_ms),
                    sa.and_(p.c.next_at <= now_ms, free),
                ),
            )
            .order_by(sa.func.coalesce(p.c.next_at, 0), jobs.c.seq)
            .limit(limit)
        )
        until = now_ms + lease_ms
        async with self._engine.begin() as conn:
            postgres = conn.dialect.name == "postgresql"
            if postgres:
                due = due.with_for_update(of=jobs, skip_locked=True)
            rows = (await conn.execute(due)).all()
            scheduled = [r.id for r in rows if r.scheduled]
            claimed = await self._lease(conn, scheduled, now_ms, until, holder)
            new = [r.id for r in rows if not r.scheduled]
            claimed += await self._schedule_first(conn, new, now_ms, until, holder)
            accounts = {r.account_key for r in rows if sweeps is not None and sweeps(r.provider)}
            if accounts and sweep_limit > 0:
                companions = (
                    sa.select(jobs.c.id)
                    .select_from(jobs.join(p, p.c.job_id == jobs.c.id))
                    .where(
                        *active,
                        jobs.c.account_key.in_(sorted(accounts)),
                        p.c.next_at <= now_ms,
                        free,  # the jobs just leased are no longer free
                    )
                    .order_by(p.c.next_at, jobs.c.seq)
                    .limit(sweep_limit)
                )
                if postgres:
                    companions = companions.with_for_update(of=jobs, skip_locked=True)
                ids = list((await conn.execute(companions)).scalars())
                claimed += await self._lease(conn, ids, now_ms, until, holder)
        return claimed

    @staticmethod
    async def _lease(
        conn: Any, job_ids: list[str], now_ms: int, until: int, holder: str
    ) -> list[tuple[str, float]]:
        """Leases the scheduled `job_ids` still due and free at `now_ms`. The claim's
        SELECT locks only `jobs` rows (the nullable side of an outer join cannot be locked): its
        `job_polls` values may be stale by now — another replica may have leased, polled and
        rescheduled a job meanwhile — so the lease re-checks both."""
        if not job_ids:
            return []
        p = job_polls
        result = await conn.execute(
            p.update()
            .where(
                p.c.job_id.in_(job_ids),
                p.c.next_at <= now_ms,
                sa.or_(p.c.lease_until.is_(None), p.c.lease_until <= now_ms),
            )
            .values(lease_until=until, holder=holder)
            .returning(p.c.job_id, p.c.interval)
        )
        return [(job_id, float(interval or 0.0)) for job_id, interval in result.all()]

    @staticmethod
    async def _schedule_first(
        conn: Any, job_ids: list[str], now_ms: int, until: int, holder: str
    ) -> list[tuple[str, float]]:
        """Schedule rows, leased, for jobs never polled (another replica's row wins)."""
        if not job_ids:
            return []
        insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        row = {"next_at": now_ms, "interval": 0.0, "lease_until": until, "holder": holder, "polls": 0}
        rows = [{"job_id": job_id, **row} for job_id in job_ids]
        result = await conn.execute(
            insert(job_polls)
            .values(rows)
            .on_conflict_do_nothing(index_elements=["job_id"])
            .returning(job_polls.c.job_id)
        )
        return [(job_id, 0.0) for job_id in result.scalars()]

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
