"""The job registry's public face: OpenAI's `/v1/fine_tuning/jobs` rules over the registry, the
providers and the mirrors. Answers are the contract's messages (`FineTuningJob` and the list
responses), made by `_render` from the registry's records; no gRPC here, the servicer translates
requests and returns these answers as they are.

Every method takes the caller's owner scope first and the call's metadata (lower-case keys) for
routing. Jobs are found by gateway id within the owner scope — another owner's id is 404 — and
reached on the account that created them: the call's own credential when it resolves to that
account, else the stored account (virtual keys), else none (see `Backends.for_job`). Without a
usable credential, reads serve the registry's last snapshot and mirrors; mutations answer 401
`missing_credentials`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tunegate.server.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    TunegateError,
    Unavailable,
)
from tunegate.server.files import Clock, FileService
from tunegate.server.ids import is_well_formed
from tunegate.server.jobs._backends import (
    AccountRouter,
    Backend,
    Backends,
    ProviderLookup,
    missing_credentials,
)
from tunegate.server.jobs._create import (
    CREATED,
    FAILED_TO_CREATE,
    FILE_PARAMS,
    INTENT,
    JOB_PREFIX,
    CreationSettings,
    JobCreator,
    ReconcileReport,
)
from tunegate.server.jobs._listing import JobLister
from tunegate.server.jobs._mirror import Mirror, checkpoints_lister, events_lister
from tunegate.server.jobs._provider_files import FileCopySettings, ProviderFileCopier, Sleep
from tunegate.server.jobs._render import (
    checkpoint_list,
    event_list,
    foreign_job,
    job_message,
    with_provider_job,
)
from tunegate.server.jobs._result_files import ResultFileImporter
from tunegate.server.jobs._validation import check_create_request, check_metadata
from tunegate.server.providers import no_retries
from tunegate.server.providers.interface import Account, Capability, JobObject, Provider, unsupported
from tunegate.server.routing import BEDROCK, non_route_options
from tunegate.server.store import Database, JobRecord
from tunegate.v1 import fine_tuning_pb2 as ft

__all__ = ["CHECKPOINT_PREFIX", "EVENT_PREFIX", "JobService", "JobSettings"]

logger = logging.getLogger("tunegate.server")

EVENT_PREFIX = "ftevent-"
CHECKPOINT_PREFIX = "ftckpt_"
GATEWAY_KEYS = ("portkey_options", "provider_options", "request_id")
DEFAULT_JOBS_LIMIT, DEFAULT_EVENTS_LIMIT, DEFAULT_CHECKPOINTS_LIMIT = 20, 20, 10
MAX_JOBS_LIMIT = 100
MAX_EVENTS_PAGE = 1000
TERMINAL_STATUSES = frozenset({ft.JOB_STATUS_SUCCEEDED, ft.JOB_STATUS_FAILED, ft.JOB_STATUS_CANCELLED})
MAX_REQUEST_ID = 255


@dataclass(frozen=True, slots=True)
class JobSettings:
    """`default_provider`: used by a create that names no provider (None: 400
    `missing_provider`). `cursor_ttl`: how long a provider page token stays usable (seconds).
    `watch_poll_seconds`: how often a watch (`JobService.watch`) looks for news;
    `watch_page_size`: how many events it reads and sends at a time. Raises ValueError on a
    value that is not positive."""

    creation: CreationSettings = field(default_factory=CreationSettings)
    files: FileCopySettings = field(default_factory=FileCopySettings)
    default_provider: str | None = None
    cursor_ttl: int = 24 * 3600
    watch_poll_seconds: float = 2.0
    watch_page_size: int = 100

    def __post_init__(self) -> None:
        if not self.watch_poll_seconds > 0:
            raise ValueError("watch_poll_seconds must be positive")
        if not 1 <= self.watch_page_size <= MAX_EVENTS_PAGE:
            raise ValueError(f"watch_page_size must be between 1 and {MAX_EVENTS_PAGE}")


@dataclass(frozen=True, slots=True)
class PollOutcome:
    """A monitor poll: the job's status before and after (None: the job is gone), and, when the
    provider could not answer, its `Retry-After` hint and the error code."""

    before: str | None
    after: str | None
    retry_after: float | None = None
    error: str | None = None


def _job_not_found(job_id: str) -> NotFound:
    return NotFound(f"No such fine-tuning job: {job_id}", code="job_not_found", param="fine_tuning_job_id")


def _limit(limit: int | None, default: int, maximum: int = MAX_JOBS_LIMIT) -> int:
    if limit is None:
        return default
    if not 1 <= limit <= maximum:
        raise InvalidArgument(f"limit must be between 1 and {maximum}.", code="invalid_value", param="limit")
    return limit


def _body_options(body: dict[str, Any]) -> tuple[dict[str, Any] | None, str, dict[str, Any]]:
    """The create body's routing options (`portkey_options` wins on a shared key), and the
    `provider_options` routing does not read (the adapter's settings)."""
    portkey = body.pop("portkey_options", None) or {}
    provider = body.pop("provider_options", None) or {}
    adapter = non_route_options(provider)
    if not portkey and not provider:
        return None, "provider_options", adapter
    return {**provider, **portkey}, "portkey_options" if portkey else "provider_options", adapter


class JobService:
    """Owner-scoped fine-tuning job operations (see the module docstring)."""

    def __init__(
        self,
        database: Database,
        files: FileService,
        router: AccountRouter,
        providers: ProviderLookup,
        *,
        settings: JobSettings | None = None,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.settings = settings or JobSettings()
        self._repo = database.jobs
        self._router = router
        self._providers = providers
        self._clock = clock
        self._sleep = sleep
        self.backends = Backends(router, providers, default_provider=self.settings.default_provider)
        self.copier = ProviderFileCopier(
            files,
            database.files,
            database.provider_files,
            providers,
            settings=self.settings.files,
            clock=clock,
            sleep=sleep,
        )
        self.creator = JobCreator(
            database.jobs, self.copier, self.backends, settings=self.settings.creation, clock=clock
        )
        self.results = ResultFileImporter(files, database.provider_files, clock=clock)
        self._lister = JobLister(
            database.jobs,
            router,
            providers,
            self.backends,
            self.creator,
            self._store,
            cursor_ttl=self.settings.cursor_ttl,
            clock=clock,
        )
        self._events = Mirror(database.job_events, prefix=EVENT_PREFIX, lister=events_lister)
        self._checkpoints = Mirror(
            database.job_checkpoints, prefix=CHECKPOINT_PREFIX, lister=checkpoints_lister
        )

    def _now(self) -> int:
        return int(self._clock())

    # -- create ---------------------------------------------------------------------------

    async def create(
        self,
        owner: str,
        body: Mapping[str, Any],
        *,
        metadata: Mapping[str, str],
        request_id: str | None = None,
    ) -> ft.FineTuningJob:
        """Create a job from an OpenAI create body (which may carry `portkey_options`,
        `provider_options` and `request_id`; the body's `request_id` wins over the argument).

        Order: OpenAI's field rules → routing → the provider's own rules → capabilities →
        gateway files (owner's, purpose `fine-tune`) — all before any provider cost; then the
        creation protocol of `tunegate.server.jobs._create`."""
        request = dict(body)
        options, body_param, adapter_options = _body_options(request)
        request_id = request.pop("request_id", None) or request_id or None
        check_create_request(request)
        if request_id is not None and len(request_id) > MAX_REQUEST_ID:
            raise InvalidArgument("request_id is too long.", code="invalid_value", param="request_id")
        backend = self.backends.for_create(metadata, options, body_param=body_param)
        if request.get("role_arn") is not None and backend.account.provider != BEDROCK:
            raise InvalidArgument(
                "role_arn applies to the bedrock provider only.", code="invalid_value", param="role_arn"
            )
        if adapter_options:
            # What the adapter reads (Bedrock's `model`, `role_arn`, …); never a credential.
            request["provider_options"] = adapter_options
        backend.provider.check_request(backend.account, request)
        backend.require(Capability.CREATE, "fine-tuning jobs")
        stages = backend.can(Capability.STAGED_FILES)
        copies_files = False
        for param in FILE_PARAMS:
            file_id = request.get(param)
            if file_id and await self.copier.check_file(owner, file_id, backend, param=param) is not None:
                if not stages:
                    backend.require(Capability.FILES, "file uploads")
                copies_files = True
        record = await self.creator.create(
            owner,
            request,
            backend,
            request_id=request_id,
            copies_files=copies_files,
            background=copies_files and stages,
        )
        return job_message(record)

    # -- reads ----------------------------------------------------------------------------

    async def retrieve(self, owner: str, job_id: str, *, metadata: Mapping[str, str]) -> ft.FineTuningJob:
        """The job, refreshed from its provider when a credential for it is at hand. A job the
        registry does not hold is passed through from the provider the call names."""
        record = await self._owned_or_none(owner, job_id)
        if record is None:
            foreign = self._foreign(job_id, metadata, Capability.RETRIEVE, "retrieving jobs")
            return foreign_job(await foreign.provider.get_job(foreign.account, job_id))
        backend = self.backends.for_job(record, metadata)
        # The registry has an answer: the provider is asked once, and a provider that fails
        # (down, slow, erroring) is one WARNING line, not a wait — the stored job is served.
        with no_retries():
            record = await self.creator.resolve(record, backend)
            if record.state == CREATED and backend is not None and backend.can(Capability.RETRIEVE):
                assert record.native_id is not None
                try:
                    fresh = await backend.provider.get_job(backend.account, record.native_id)
                except (Unavailable, DeadlineExceeded) as exc:
                    logger.warning(
                        "%s get_job for %s failed, serving the stored job: %s",
                        record.provider,
                        record.id,
                        exc,
                    )
                else:
                    record = await self._store(record, fresh, backend)
        return job_message(record)

    async def list(
        self,
        owner: str,
        *,
        metadata: Mapping[str, str],
        after: str | None = None,
        limit: int | None = None,
        metadata_filter: Mapping[str, str] | None = None,
    ) -> ft.ListFineTuningJobsResponse:
        """Jobs newest first: with a provider named, that account's jobs at the provider
        (registry jobs under their gateway ids, others under native ids); otherwise the
        registry across providers (see `tunegate.server.jobs._listing`).

        `metadata_filter`: None = all; empty = jobs without metadata; else jobs holding every pair."""
        size = _limit(limit, DEFAULT_JOBS_LIMIT)
        if metadata_filter:
            check_metadata(metadata_filter)
        return await self._lister.list(
            owner, metadata=metadata, after=after, limit=size, metadata_filter=metadata_filter
        )

    # -- mutations ------------------------------------------------------------------------

    async def cancel(self, owner: str, job_id: str, *, metadata: Mapping[str, str]) -> ft.FineTuningJob:
        return await self._mutate(
            owner, job_id, metadata, Capability.CANCEL, "cancel", lambda p: p.cancel_job
        )

    async def pause(self, owner: str, job_id: str, *, metadata: Mapping[str, str]) -> ft.FineTuningJob:
        return await self._mutate(owner, job_id, metadata, Capability.PAUSE, "pause", lambda p: p.pause_job)

    async def resume(self, owner: str, job_id: str, *, metadata: Mapping[str, str]) -> ft.FineTuningJob:
        return await self._mutate(
            owner, job_id, metadata, Capability.RESUME, "resume", lambda p: p.resume_job
        )

    async def _mutate(
        self,
        owner: str,
        job_id: str,
        metadata: Mapping[str, str],
        capability: Capability,
        operation: str,
        method: Callable[[Provider], Callable[[Account, str], Awaitable[JobObject]]],
    ) -> ft.FineTuningJob:
        record = await self._owned_or_none(owner, job_id)
        if record is None:
            foreign = self._foreign(job_id, metadata, capability, operation)
            return foreign_job(await method(foreign.provider)(foreign.account, job_id))
        backend = self.backends.for_job(record, metadata)
        if backend is None:
            if capability not in self._providers.get(record.provider).capabilities:
                raise unsupported(record.provider, operation)
            raise missing_credentials(record, operation)
        backend.require(capability, operation)
        record = await self.creator.resolve(record, backend)
        if (
            capability == Capability.CANCEL
            and record.state == INTENT
            and (record.attempted or backend.can(Capability.STAGED_FILES))
        ):
            # Unconfirmed (or its files are still being staged): keep the wish; whoever finds
            # the job by its tag, or the staging task before it creates it, carries it out.
            if await self._repo.request_cancel(record.id, now=self._now()):
                record = dataclasses.replace(record, cancel_requested=True, status="cancelled")
                return job_message(record)
            record = await self._repo.get_any(record.id) or record
        if record.state != CREATED or record.native_id is None:
            raise FailedPrecondition(
                f"Cannot {operation} job {job_id}: the provider has not confirmed it"
                + (" (its creation failed)." if record.state != INTENT else " yet; retry shortly."),
                code="invalid_state",
                param="fine_tuning_job_id",
            )
        result = await method(backend.provider)(backend.account, record.native_id)
        return job_message(await self._store(record, result, backend))

    # -- events and checkpoints -------------------------------------------------------------

    async def list_events(
        self,
        owner: str,
        job_id: str,
        *,
        metadata: Mapping[str, str],
        after: str | None = None,
        limit: int | None = None,
    ) -> ft.ListFineTuningEventsResponse:
        """The job's events newest first, mirrored under `ftevent-` ids."""
        size = _limit(limit, DEFAULT_EVENTS_LIMIT)
        record = await self._owned_or_none(owner, job_id)
        if record is None:
            foreign = self._foreign(job_id, metadata, Capability.EVENTS, "job events")
            native = await foreign.provider.list_events(foreign.account, job_id, limit=size, page_token=after)
            return event_list(((str(body.get("id")), body) for body in native.data), has_more=native.has_more)
        record = await self._sync(record, metadata, self._events, Capability.EVENTS, "job events")
        page = await self._events.page(record, after=after, limit=size)
        return event_list(((row.id, row.body) for row in page.data), has_more=page.has_more)

    async def watch(
        self, owner: str, job_id: str, *, metadata: Mapping[str, str], after: str | None = None
    ) -> AsyncGenerator[ft.FineTuningJobUpdate, None]:
        """A live watch of one of the owner's registry jobs. Theory of operation:

        1. The job (as `retrieve` answers it) — another owner's or an unknown id is 404, and a
           bad `after` (not one of this job's event ids) is 400, before anything is sent.
        2. Every `watch_poll_seconds`: the events mirrored since the last one sent (the first
           time: all of them, or those after `after`), oldest first, read `watch_page_size` at a
           time from the mirror (refreshed from the provider as `list_events` does, so nothing
           is sent twice); then the job again if its status differs from the last one sent.
        3. It ends once the job it has sent is terminal (`succeeded`, `failed`, `cancelled`),
           after the events up to then — at once (job, then events) for a finished job.

        A provider without events (Fireworks) sends the job only. The caller closing the
        iterator (or cancelling its task, as gRPC does when the client goes away) stops it; it
        starts no task of its own."""
        record = await self._owned_or_none(owner, job_id)
        if record is None:
            raise _job_not_found(job_id)
        with_events = Capability.EVENTS in self._providers.get(record.provider).capabilities
        if after and not with_events:
            raise unsupported(record.provider, "job events")
        position = await self._events.position(record, after) if after else None
        job = await self.retrieve(owner, job_id, metadata=metadata)
        yield ft.FineTuningJobUpdate(job=job)
        sent = job.status
        settings = self.settings
        while True:
            if with_events:
                record = await self._sync(record, metadata, self._events, Capability.EVENTS, "job events")
                while True:
                    rows = await self._events.newer(record, after=position, limit=settings.watch_page_size)
                    page = event_list(((row.id, row.body) for row in rows), has_more=False)
                    for row, event in zip(rows, page.data, strict=True):
                        yield ft.FineTuningJobUpdate(event=event)
                        position = row.seq
                    if len(rows) < settings.watch_page_size:
                        break
            if job.status != sent:
                yield ft.FineTuningJobUpdate(job=job)
                sent = job.status
            if sent in TERMINAL_STATUSES:
                return
            await self._sleep(settings.watch_poll_seconds)
            job = await self.retrieve(owner, job_id, metadata=metadata)
            record = await self._owned_or_none(owner, job_id) or record

    async def list_checkpoints(
        self,
        owner: str,
        job_id: str,
        *,
        metadata: Mapping[str, str],
        after: str | None = None,
        limit: int | None = None,
    ) -> ft.ListFineTuningCheckpointsResponse:
        """The job's checkpoints newest first, mirrored under `ftckpt_` ids."""
        size = _limit(limit, DEFAULT_CHECKPOINTS_LIMIT)
        record = await self._owned_or_none(owner, job_id)
        if record is None:
            foreign = self._foreign(job_id, metadata, Capability.CHECKPOINTS, "job checkpoints")
            native = await foreign.provider.list_checkpoints(
                foreign.account, job_id, limit=size, page_token=after
            )
            items = ((str(body.get("id")), body) for body in native.data)
            return checkpoint_list(items, job_id=job_id, has_more=native.has_more)
        record = await self._sync(
            record, metadata, self._checkpoints, Capability.CHECKPOINTS, "job checkpoints"
        )
        page = await self._checkpoints.page(record, after=after, limit=size)
        items = ((row.id, row.body) for row in page.data)
        return checkpoint_list(items, job_id=record.id, has_more=page.has_more)

    async def _sync(
        self,
        record: JobRecord,
        metadata: Mapping[str, str],
        mirror: Mirror,
        capability: Capability,
        operation: str,
    ) -> JobRecord:
        backend = self.backends.for_job(record, metadata)
        if backend is None:
            if capability not in self._providers.get(record.provider).capabilities:
                raise unsupported(record.provider, operation)
            return record  # no credential: serve what is mirrored
        backend.require(capability, operation)
        record = await self.creator.resolve(record, backend)
        if record.state == CREATED:
            try:
                await mirror.sync(record, backend)
            except (Unavailable, DeadlineExceeded) as exc:  # serve the mirror; the next call catches up
                logger.warning("could not refresh %s of %s: %r", operation, record.id, exc)
        return record

    async def records(self, job_ids: Sequence[str]) -> Sequence[JobRecord]:
        """The registry's rows for `job_ids` (any owner), read at once (the job monitor's)."""
        return await self._repo.get_many(job_ids)

    def lists_whole_jobs(self, provider: str) -> bool:
        """Whether `provider`'s job listing answers each job as a read of it would
        (`LIST_FULL_JOBS`), so `sweep` can read its jobs."""
        try:
            return Capability.LIST_FULL_JOBS in self.backends.providers.get(provider).capabilities
        except InvalidArgument:  # a provider no longer configured
            return False

    async def sweep(
        self, records: Sequence[JobRecord], *, page_size: int = 100
    ) -> tuple[dict[str, JobObject], TunegateError | None]:
        """The provider's current jobs for `records` — created jobs of one account — read from
        one walk over the account's job listing, when its provider lists whole jobs
        (`LIST_FULL_JOBS`): at most twice the pages the jobs would fill, plus one. Returns the
        jobs found (by gateway id) and the provider's refusal or failure that cut the walk short
        (429, 5xx, a timeout), if any; a job not found is for the caller to read alone."""
        backend = self.backends.for_job(records[0], None) if records else None
        if backend is None or not backend.can(Capability.LIST_FULL_JOBS):
            return {}, None
        wanted = {r.native_id: r.id for r in records if r.native_id is not None}
        found: dict[str, JobObject] = {}
        token: str | None = None
        with no_retries():
            for _ in range(2 * -(-len(wanted) // page_size) + 1):
                try:
                    page = await backend.provider.list_jobs(
                        backend.account, limit=page_size, page_token=token
                    )
                except (Unavailable, DeadlineExceeded, ResourceExhausted) as exc:
                    return found, exc
                for job in page.data:
                    gateway_id = wanted.pop(str(job.get("id")), None)
                    if gateway_id is not None:
                        found[gateway_id] = job
                if not wanted or not page.has_more:
                    break
                token = page.next_token
        return found, None

    async def poll(self, record: JobRecord, listed: JobObject | None = None) -> PollOutcome:
        """Refreshes one job from its provider with the credential the gateway holds for it (the
        job monitor's call; a job whose account cannot be rebuilt is left as it is): `listed`,
        the job as a `sweep` found it, else the provider's answer for the job alone. A status
        change also syncs the job's events, so the change is recorded as the provider reports it."""
        before = record.status
        backend = self.backends.for_job(record, None)
        if backend is None or not backend.can(Capability.RETRIEVE):
            return PollOutcome(before, before)
        with no_retries():
            record = await self.creator.resolve(record, backend)
            if record.state != CREATED or record.native_id is None:
                return PollOutcome(before, record.status)
            try:
                fresh = listed or await backend.provider.get_job(backend.account, record.native_id)
            except (Unavailable, DeadlineExceeded, ResourceExhausted) as exc:
                return PollOutcome(
                    before, before, retry_after=getattr(exc, "retry_after", None), error=exc.code
                )
            record = await self._store(record, fresh, backend)
            if record.status != before and backend.can(Capability.EVENTS):
                try:
                    await self._events.sync(record, backend)
                except (Unavailable, DeadlineExceeded, ResourceExhausted) as exc:
                    logger.warning("could not sync the events of %s: %r", record.id, exc)
        return PollOutcome(before, record.status)

    async def owned_native_job(self, owner: str, provider: str, native_id: str) -> str | None:
        """The gateway id of this owner's job that `provider` knows as `native_id` (None if the
        owner has no such job) — how a served model is checked to belong to its caller."""
        record = await self._repo.by_native_id(owner, provider, native_id)
        return None if record is None or record.state != CREATED else record.id

    async def owned_native_ids(self, owner: str, provider: str) -> tuple[str, ...]:
        """The native ids of this owner's jobs on `provider`, newest first — how the models a
        caller may call are found."""
        return tuple(await self._repo.native_ids(owner, provider))

    # -- files, reconciliation, lifecycle ---------------------------------------------------

    async def copy_to_provider(self, owner: str, file_id: str, account: Account) -> str:
        """Copy a gateway file to a provider account now; returns the provider's file id."""
        return await self.copier.copy_to_provider(owner, file_id, account)

    def check_upload_route(self, metadata: Mapping[str, str]) -> None:
        """Raises the routing error (a 400 naming the header) of an upload whose call names a
        provider that cannot be resolved, before its body is stored."""
        self._router.resolve(metadata)

    def schedule_file_copy(self, owner: str, file_id: str, metadata: Mapping[str, str]) -> bool:
        """After an upload whose call names a provider: copy the file there in the background.
        Returns whether a copy was scheduled; routing errors are logged, not raised."""
        try:
            account = self._router.resolve(metadata)
        except Exception:
            logger.exception("not copying %s: its upload's route does not resolve", file_id)
            return False
        if account is None:
            return False
        return self.copier.schedule_copy(owner, file_id, account)

    async def reconcile(self) -> ReconcileReport:
        """Resolve stale create intents (see `tunegate.server.jobs._create`)."""
        return await self.creator.reconcile()

    async def aclose(self) -> None:
        """Cancel background work (creations staging files, file copies)."""
        try:
            await self.creator.aclose()
        finally:
            await self.copier.aclose()

    # -- plumbing ---------------------------------------------------------------------------

    async def _owned_or_none(self, owner: str, job_id: str) -> JobRecord | None:
        record = await self._repo.get(owner, job_id) if is_well_formed(job_id, JOB_PREFIX) else None
        if record is not None and record.state == FAILED_TO_CREATE:
            raise _job_not_found(job_id)
        return record

    def _foreign(
        self, job_id: str, metadata: Mapping[str, str], capability: Capability, operation: str
    ) -> Backend:
        """The backend for a job the registry does not hold — one created at the provider
        directly, as a provider-named list shows it — on the provider this call names. Its ids,
        cursors included, are the provider's own: a pure pass-through. No provider named: 404."""
        account = self._router.resolve(metadata)
        if account is None:
            raise _job_not_found(job_id)
        backend = Backend(self._providers.get(account.provider), account)
        backend.require(capability, operation)
        return backend

    async def _store(self, record: JobRecord, provider_job: JobObject, backend: Backend | None) -> JobRecord:
        """`record` with the provider's latest job, written to the registry if it changed."""
        native_results = provider_job.get("result_files") or []
        if native_results:
            gateway_results = await self.results.gateway_ids(
                record, backend, [str(i) for i in native_results]
            )
            provider_job = {**provider_job, "result_files": gateway_results}
        updated = with_provider_job(record, provider_job)
        if updated.snapshot == record.snapshot and updated.status == record.status:
            return record  # a poll that changed nothing writes nothing
        assert updated.snapshot is not None
        await self._repo.update_snapshot(
            record.id, status=updated.status, snapshot=updated.snapshot, now=self._now()
        )
        return updated
