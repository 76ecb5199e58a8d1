"""The job monitor: follows every non-terminal job whose credentials the gateway holds, so a job
moves to `succeeded` with no client asking.

Followed: jobs created on an account the gateway can rebuild by itself — a configured virtual key
(`vk:`), a stored one (`svk:`), or the local trainer. A job created with per-call credentials is
refreshed when a caller reads it (those credentials are never stored).

Each tick claims the due jobs (`PollRepository.claim`: a lease per job, row locks with
`SKIP LOCKED` on PostgreSQL, so replicas sharing a database split the work and never poll one job
twice at once; a replica that dies leaves leases that expire after `lease_seconds`, and the
others take its jobs over), polls them (`JobService.poll`, at most `concurrency` at a time) and
schedules the next poll.

An account whose provider lists whole jobs (`Capability.LIST_FULL_JOBS`: OpenAI, Azure, Vertex,
Fireworks) is read a page at a time rather than a job at a time. Its jobs' polls are placed on a
grid of `min_interval` seconds (the nearest point, offset per account, so accounts do not all fall
due at once): jobs of one account due at about the same time fall due at the same instant. The
claim then takes all of the account's due jobs (up to `sweep_limit`, beyond `batch`), and one walk
over the account's listing (`JobService.sweep`) answers them: a thousand running jobs on one key
cost ten listing calls a round instead of a thousand reads. A job the walk does not reach is read
alone; a refusal (429, 5xx) cuts the walk and reschedules the rest as below.

The cadence of each job:

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
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from tunegate.server.errors import TunegateError
from tunegate.server.jobs._service import JobService, PollOutcome
from tunegate.server.providers.interface import JobObject
from tunegate.server.routing import LOCAL_PROVIDER, STORED_KEY_PREFIX
from tunegate.server.store import JobRecord, PollRepository

__all__ = ["JobMonitor", "MonitorSettings"]

logger = logging.getLogger("tunegate.server")

TERMINAL = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class MonitorSettings:
    """`tick`: seconds between claims. `min_interval` / `max_interval` / `backoff`: the polling
    cadence per job (see the module docstring). `lease_seconds`: how long a claim holds a job.
    `batch`: due jobs claimed per tick; `concurrency`: polls in flight at once. `sweep_limit`:
    an account's jobs claimed with a due one, at most; `sweep_min_jobs`: fewer jobs of one account
    are read one by one (see the module docstring)."""

    enabled: bool = True
    tick: float = 1.0
    min_interval: float = 10.0
    max_interval: float = 300.0
    backoff: float = 1.5
    lease_seconds: float = 60.0
    batch: int = 100
    concurrency: int = 8
    sweep_limit: int = 10_000
    sweep_min_jobs: int = 3

    def __post_init__(self) -> None:
        if not (self.tick > 0 and 0 < self.min_interval <= self.max_interval and self.backoff >= 1):
            raise ValueError("monitor: need 0 < tick, 0 < min_interval <= max_interval, backoff >= 1")
        if self.lease_seconds <= 0 or self.batch < 1 or self.concurrency < 1 or self.sweep_min_jobs < 1:
            raise ValueError("monitor: lease_seconds, batch, concurrency and sweep_min_jobs must be positive")
        if self.sweep_limit < 0:
            raise ValueError("monitor: sweep_limit must not be negative")


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
            sweeps=self._jobs.lists_whole_jobs,
            sweep_limit=s.sweep_limit,
        )
        records = {
            record.id: record for record in await self._jobs.records([job_id for job_id, _ in claimed])
        }
        gate = asyncio.Semaphore(s.concurrency)
        listed: dict[str, JobObject] = {}
        refused: dict[str, TunegateError] = {}
        schedules: list[tuple[str, int, float]] = []

        async def sweep(group: list[JobRecord]) -> None:
            async with gate:
                try:
                    found, error = await self._jobs.sweep(group)
                except Exception:
                    logger.exception("monitor: listing the jobs of %s failed", group[0].account_key)
                    return  # each job is then read alone
            listed.update(found)
            if error is not None:
                refused.update((r.id, error) for r in group if r.id not in found)

        async def one(job_id: str, last: float) -> None:
            record = records.get(job_id)
            async with gate:
                try:
                    if record is None:
                        outcome = PollOutcome(None, None)
                    elif job_id in refused:
                        error = refused[job_id]
                        retry_after = getattr(error, "retry_after", None)
                        outcome = PollOutcome(record.status, record.status, retry_after, error.code)
                    else:
                        outcome = await self._jobs.poll(record, listed.get(job_id))
                except Exception:
                    logger.exception("monitor: polling %s failed", job_id)
                    outcome = PollOutcome("unknown", "unknown", error="internal_error")
                self.polled += 1
            interval = next_interval(s, last, outcome)
            after = s.max_interval * 1000 if interval is None else interval * 1000
            now = self._clock() * 1000
            at = int(now + after)
            if record is not None and self._jobs.lists_whole_jobs(record.provider):
                at = self._on_grid(at, record.account_key, int(now + (outcome.retry_after or 0) * 1000))
            schedules.append((job_id, at, interval or 0.0))

        try:
            await asyncio.gather(*(sweep(group) for group in self._sweep_groups(records.values())))
            await asyncio.gather(*(one(job_id, last) for job_id, last in claimed))
        finally:  # the leases are released whatever happened (else they expire)
            await self._polls.schedule_many(self.holder, schedules)
        return len(claimed)

    def _on_grid(self, at_ms: int, account_key: str, not_before_ms: int) -> int:
        """`at_ms` moved to the nearest point of the account's polling grid (see the module
        docstring), at most half of `min_interval` earlier or later, and never before
        `not_before_ms` (a provider's `Retry-After`)."""
        step = max(1, int(self.settings.min_interval * 1000))
        offset = zlib.crc32(account_key.encode()) % step
        at = round((at_ms - offset) / step) * step + offset
        return at if at >= not_before_ms else at + step

    def _sweep_groups(self, records: Iterable[JobRecord]) -> list[list[JobRecord]]:
        """The claimed jobs read from their account's listing: created jobs on a sweeping
        provider, grouped by account, in groups of at least `sweep_min_jobs`."""
        groups: dict[str, list[JobRecord]] = defaultdict(list)
        for record in records:
            listed = record.state == "created" and record.native_id is not None
            if listed and self._jobs.lists_whole_jobs(record.provider):
                groups[record.account_key].append(record)
        return [group for group in groups.values() if len(group) >= self.settings.sweep_min_jobs]

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
