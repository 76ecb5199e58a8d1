"""The job monitor: follows every non-terminal job whose credentials the gateway holds, so a job
moves to `succeeded` with no client asking.

Followed: jobs created on an account the gateway can rebuild by itself — a configured virtual key
(`vk:`), a stored one (`svk:`), or the local trainer. A job created with per-call credentials is
refreshed when a caller reads it (those credentials are never stored).

Each tick claims the due jobs (`PollRepository.claim`: a lease per job, row locks with
`SKIP LOCKED` on PostgreSQL, so replicas sharing a database split the work and never poll one job
twice at once; a replica that dies leaves leases that expire after `lease_seconds`, and the
others take its jobs over), polls them (`JobService.poll`, at most `concurrency` at a time) and
schedules the next poll:

- right after a status change: `min_interval` seconds;
- no change: the last interval × `backoff`, up to `max_interval` (a long run is polled rarely);
- the provider refused or failed (429, 5xx, a timeout): at least its `Retry-After`, else the
  interval doubled;
- a terminal status: never again.

A status change is stored with the job (and its events synced), exactly as a read would; whoever
watches the registry — a job watch, webhooks — sees it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from tunegate.server.jobs._service import JobService, PollOutcome
from tunegate.server.routing import LOCAL_PROVIDER, STORED_KEY_PREFIX
from tunegate.server.store import PollRepository

__all__ = ["JobMonitor", "MonitorSettings"]

logger = logging.getLogger("tunegate.server")

TERMINAL = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class MonitorSettings:
    """`tick`: seconds between claims. `min_interval` / `max_interval` / `backoff`: the polling
    cadence per job (see the module docstring). `lease_seconds`: how long a claim holds a job.
    `batch`: jobs claimed per tick; `concurrency`: polls in flight at once."""

    enabled: bool = True
    tick: float = 1.0
    min_interval: float = 10.0
    max_interval: float = 300.0
    backoff: float = 1.5
    lease_seconds: float = 60.0
    batch: int = 100
    concurrency: int = 8

    def __post_init__(self) -> None:
        if not (self.tick > 0 and 0 < self.min_interval <= self.max_interval and self.backoff >= 1):
            raise ValueError("monitor: need 0 < tick, 0 < min_interval <= max_interval, backoff >= 1")
        if self.lease_seconds <= 0 or self.batch < 1 or self.concurrency < 1:
            raise ValueError("monitor: lease_seconds, batch and concurrency must be positive")


def next_interval(settings: MonitorSettings, last: float, outcome: PollOutcome) -> float | None:
    """Seconds until the next poll of a job (None: stop following it)."""
    if outcome.after is None or outcome.after in TERMINAL:
        return None
    if outcome.error is not None:
        grown = min(max(last, settings.min_interval) * 2, settings.max_interval)
        return max(grown, outcome.retry_after or 0.0)
    if outcome.after != outcome.before or last <= 0:
        return settings.min_interval
    return min(last * settings.backoff, settings.max_interval)


class JobMonitor:
    """Runs the monitor loop for one process (`run`); `tick` is one round, for tests."""

    def __init__(
        self,
        jobs: JobService,
        polls: PollRepository,
        settings: MonitorSettings | None = None,
        clock: Callable[[], float] = time.time,
        holder: str | None = None,
    ) -> None:
        self.settings = settings or MonitorSettings()
        self._jobs = jobs
        self._polls = polls
        self._clock = clock
        self.holder = holder or f"replica-{secrets.token_hex(6)}"
        self.polled = 0
        """Polls made by this process (for the benchmark and tests)."""

    async def tick(self) -> int:
        """Claims the due jobs, polls them, schedules them; returns how many were polled."""
        s = self.settings
        now_ms = int(self._clock() * 1000)
        claimed = await self._polls.claim(
            now_ms=now_ms,
            lease_ms=int(s.lease_seconds * 1000),
            limit=s.batch,
            holder=self.holder,
            terminal=TERMINAL,
            followed=(LOCAL_PROVIDER,),
            prefixes=("vk:", STORED_KEY_PREFIX),
            first_after_ms=int(s.min_interval * 1000),  # a job just created was just read
        )
        records = {
            record.id: record for record in await self._jobs.records([job_id for job_id, _ in claimed])
        }
        gate = asyncio.Semaphore(s.concurrency)
        schedules: list[tuple[str, int, float]] = []

        async def one(job_id: str, last: float) -> None:
            record = records.get(job_id)
            async with gate:
                try:
                    outcome = PollOutcome(None, None) if record is None else await self._jobs.poll(record)
                except Exception:
                    logger.exception("monitor: polling %s failed", job_id)
                    outcome = PollOutcome("unknown", "unknown", error="internal_error")
                self.polled += 1
            interval = next_interval(s, last, outcome)
            after = s.max_interval * 1000 if interval is None else interval * 1000
            schedules.append((job_id, int(self._clock() * 1000 + after), interval or 0.0))

        try:
            await asyncio.gather(*(one(job_id, last) for job_id, last in claimed))
        finally:  # the leases are released whatever happened (else they expire)
            await self._polls.schedule_many(self.holder, schedules)
        return len(claimed)

    async def run(self) -> None:
        """Ticks until cancelled; a failed tick is logged and the next one runs."""
        while True:
            try:
                polled = await self.tick()
            except Exception:
                logger.exception("monitor tick failed")
                polled = 0
            if polled < self.settings.batch:
                await asyncio.sleep(self.settings.tick)
