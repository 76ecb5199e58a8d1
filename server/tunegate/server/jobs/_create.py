"""Creating jobs: a paid job is never lost and never doubled.

Theory of operation. Each create becomes a row in `jobs` whose `state` moves::

    intent ──provider confirmed (answer, or found by tag)──▶ created
       ├────provider refused it definitely (a 4xx)────────▶ failed_to_create   (error stored)
       ├────nothing created (unreachable, 429/409)────────▶ (row deleted)
       └────never confirmed within `abandon_after`────────▶ failed             (creation_not_confirmed)

1. *Intent first.* After validation (no provider cost yet) the row is inserted as `intent`
   (status `validating_files`, the request, its hash, the idempotency key) in its own committed
   transaction, holding a *lease* (`lease_until`) that says who is driving it. The unique
   (owner, request_id) index makes exactly one concurrent insert per key win; the others replay.
2. *Files.* Gateway files are copied to the provider account (once; see `_provider_files`).
3. *Attempted.* `attempted` is committed just before `provider.create_job` — from then on the
   provider may hold a job for this row. A request naming no gateway file has nothing to do
   in step 2, so its intent is inserted `attempted` already (one write fewer).
4. *Tagged create.* The provider job is created with `tag = the gateway job id` (OpenAI keeps it
   in `metadata`), so it can always be found again with `find_job_by_tag`.
5. *Complete.* The answer is stored (`intent → created`, native id, snapshot) and committed
   before the caller is answered, so whichever instance the caller asks next sees the job
   complete. The same on SQLite and PostgreSQL.

The crash window is between 4 and 5 (and so is a store that fails in 5: the caller gets the
error): the provider has the job, the registry only the intent. Because the job carries its
tag, nothing is lost: the reconciler (start-up and periodic, for intents older than
`reconcile_grace` whose account can be rebuilt — virtual keys), the next retrieve or list by a
caller carrying the credential, or a retry with the same idempotency key finds the job by tag
and completes the row. And nothing is doubled: a row that is `attempted` is always looked up by
tag before the provider is asked to create again.

Failures of `create_job`: a definite refusal (400/401/403/404) marks `failed_to_create` and is
replayed to retries with the same key (AIP-155: the key names one outcome; the SDK does not
retry 4xx anyway). A create is sent at most once per row, so when nothing was created — a
failure in steps 1–3, a `ProviderUnreachable` (DNS, connect, TLS: the request never left), or a
429/409 (definite but transient refusals) — the row is deleted: no job exists anywhere, the
caller gets the (retryable) error and a retry starts afresh.
Anything else (read timeout, a connection reset after the request was sent, 5xx) is
*ambiguous*: the row is looked up by tag at once; found → completed and returned; not found →
the intent stays, its lease is released, and the caller is answered the intent itself
(`validating_files`), not an error: the official SDK retries errors without an idempotency key,
and each retry would be a new paid job. An attempted intent is never created again — a replay
with the same key, the next retrieve or list, and the reconciler only look it up by tag, until
it is found (`created`, the provider's state) or `abandon_after` passes (`failed`,
`creation_not_confirmed`). A cancel of such an intent is kept on the row (`cancel_requested`,
shown as `cancelled`) and carried out at the provider by whoever finds the job.

Duplicates with the same key and the same body (hash of the canonical request + account key)
wait, polling the row, while another request holds the lease, and return its outcome; a
different body is `Conflict` (409, not retried). A duplicate that finds the lease free (the
first request failed transiently, or its process died and the lease expired) drives the intent
itself: an attempted one only by the tag lookup.

Background creation. An adapter that stages files per job (`Capability.STAGED_FILES`: Bedrock
converts and uploads a whole training file first) would hold the caller for minutes in step 2.
There the create answers the intent at once (`validating_files`, lease held) and a background
task runs steps 2–5. It differs from the foreground protocol in what a failure leaves: the
caller already holds the job id, so an error before the provider's create (a line that cannot
be converted, S3 refusing the bucket) or a definite refusal of the create marks the row `failed`
with that error, visible on retrieve and list, instead of deleting it or hiding it as
`failed_to_create`. A cancel asked for while the files are staged is kept on the intent; the
task checks for it before the create (the row ends `cancelled`, nothing created) and again after
it (the new job is cancelled at the provider). A retry with the same idempotency key is answered
the intent while the task holds its lease. If the process stops mid-staging, the task marks the
row `failed` (`gateway_stopped`: nothing was created at the provider) as it is cancelled.

Fault injection: with `TUNEGATE_FAULT_CRASH_AFTER_PROVIDER_CREATE=1` in the environment (read
at call time) the process exits with status 70 right after `create_job` returns — the crash
window above, for end-to-end tests.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tunegate.server import errors
from tunegate.server.errors import Conflict, ProviderUnreachable, TunegateError, Unavailable
from tunegate.server.files import Clock
from tunegate.server.ids import FILE_PREFIX, is_well_formed, new_id
from tunegate.server.jobs._backends import Backend, Backends
from tunegate.server.jobs._provider_files import ProviderFileCopier
from tunegate.server.jobs._render import with_provider_job
from tunegate.server.providers.interface import JobObject
from tunegate.server.store import INTENT, DuplicateRequestId, JobRecord, JobRepository

__all__ = [
    "CREATED",
    "FAILED",
    "FAILED_TO_CREATE",
    "FAULT_CRASH_AFTER_PROVIDER_CREATE",
    "INTENT",
    "JOB_PREFIX",
    "CreationSettings",
    "JobCreator",
    "ReconcileReport",
]

logger = logging.getLogger("tunegate.server")

JOB_PREFIX = "ftjob-"
CREATED, FAILED_TO_CREATE, FAILED = "created", "failed_to_create", "failed"
FAULT_CRASH_AFTER_PROVIDER_CREATE = "TUNEGATE_FAULT_CRASH_AFTER_PROVIDER_CREATE"
CRASH_EXIT_STATUS = 70
FILE_PARAMS = ("training_file", "validation_file")
_exit = os._exit  # replaced by in-process tests of the crash window

# Errors by which a provider definitely refused to create a job.
_DEFINITE = (
    errors.InvalidArgument,
    errors.FailedPrecondition,
    errors.NotFound,
    errors.PermissionDenied,
    errors.Unauthenticated,
    errors.Conflict,
)
_TRANSIENT_REFUSALS = (errors.ResourceExhausted, errors.Aborted)
_REPLAYABLE: dict[str, type[TunegateError]] = {cls.__name__: cls for cls in (*_DEFINITE, errors.Unsupported)}


@dataclass(frozen=True, slots=True)
class CreationSettings:
    """Timing of the creation protocol (seconds).

    `lease`: how long a request may drive an intent before others may take over (covers file
    processing and the create call). `wait`: how long a duplicate waits for the driver.
    `reconcile_grace`: intents younger than this are left to their request. `abandon_after`: an
    intent not found at the provider this long after creation becomes `failed`.
    `tag_lookback`: tag searches start this long before the intent's creation."""

    lease: float = 900.0
    wait: float = 60.0
    poll_interval: float = 0.05
    reconcile_grace: float = 30.0
    abandon_after: float = 900.0
    tag_lookback: int = 60


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    """What one reconciler pass did."""

    completed: int = 0
    failed: int = 0
    pending: int = 0


_CANONICAL_BODY = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
"""Canonical JSON for `request_hash` (one encoder: `json.dumps` with options builds one per call)."""


def request_hash(body: Mapping[str, Any], account_key: str) -> str:
    """The idempotency fingerprint: canonical JSON of the OpenAI body plus the account key."""
    canonical = _CANONICAL_BODY.encode(body)
    return hashlib.sha256(f"{canonical}\n{account_key}".encode()).hexdigest()


def error_record(exc: TunegateError) -> dict[str, Any]:
    return {
        "class": type(exc).__name__,
        "message": exc.message,
        "code": exc.code,
        "param": exc.param,
        "type": exc.type,
        "http_status": exc.http_status,
    }


def stored_error(data: Mapping[str, Any]) -> TunegateError:
    """The error stored by `error_record`, rebuilt for a replay."""
    cls = _REPLAYABLE.get(str(data.get("class")), errors.InvalidArgument)
    return cls(
        str(data.get("message") or "The job could not be created."),
        code=data.get("code"),
        param=data.get("param"),
        type=data.get("type"),
        http_status=data.get("http_status"),
    )


def _not_reached() -> Unavailable:
    return Unavailable(
        "The first request with this idempotency key did not reach the provider; retry.",
        code="creation_pending",
        retry_after=1.0,
    )


def _brief(exc: BaseException) -> str:
    """One line for a log: the error's class and message, never a traceback."""
    message = exc.message if isinstance(exc, TunegateError) else str(exc)
    return f"{type(exc).__name__}: {message}"


def _crash_point() -> None:
    if os.environ.get(FAULT_CRASH_AFTER_PROVIDER_CREATE) == "1":
        logger.critical("fault injection: exiting between the provider's answer and the commit")
        _exit(CRASH_EXIT_STATUS)


class JobCreator:
    """Runs the creation protocol over the job repository."""

    def __init__(
        self,
        repository: JobRepository,
        copier: ProviderFileCopier,
        backends: Backends,
        *,
        settings: CreationSettings | None = None,
        clock: Clock = time.time,
    ) -> None:
        self._repo = repository
        self._copier = copier
        self._backends = backends
        self.settings = settings or CreationSettings()
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()

    def _now(self) -> int:
        return int(self._clock())

    async def create(
        self,
        owner: str,
        body: Mapping[str, Any],
        backend: Backend,
        *,
        request_id: str | None,
        copies_files: bool = True,
        background: bool = False,
    ) -> JobRecord:
        """Create (or, for a repeated idempotency key, replay) a validated request on `backend`.

        `copies_files`: whether the request names gateway files, to be copied to the provider
        before the create. Without any, nothing stands between the intent and the provider's
        create, so the intent is stored `attempted` at once (steps 1 and 3 in one write).
        `background`: answer the intent at once and run the rest in a task (see "Background
        creation" in the module docstring)."""
        now = self._now()
        account = backend.account
        metadata = body.get("metadata")
        record = JobRecord(
            id=new_id(JOB_PREFIX),
            owner=owner,
            provider=account.provider,
            account_key=account.key,
            region=account.region,
            state=INTENT,
            status="validating_files",
            request=dict(body),
            request_hash=request_hash(body, account.key),
            request_id=request_id,
            metadata=dict(metadata) if metadata else None,
            created_at=now,
            updated_at=now,
            lease_until=now + int(self.settings.lease),
            attempted=not copies_files,
        )
        if request_id is not None:
            previous = await self._repo.get_by_request_id(owner, request_id)
            if previous is not None:
                return await self._replay(previous, record, backend, background=background)
        try:
            record = await self._repo.insert_intent(record)
        except DuplicateRequestId:
            assert request_id is not None
            previous = await self._repo.get_by_request_id(owner, request_id)
            if previous is None:  # the other request never reached the provider and gave up
                raise _not_reached() from None
            return await self._replay(previous, record, backend, background=background)
        if background:
            self._spawn(record, backend)
            return record
        return await self._drive(record, backend, fresh=True)

    def _spawn(self, record: JobRecord, backend: Backend) -> None:
        """Runs `_drive` for a leased intent in a task referenced until done (`aclose` ends it)."""
        task = asyncio.create_task(self._drive_in_background(record, backend), name=f"create-{record.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drive_in_background(self, record: JobRecord, backend: Backend) -> None:
        try:
            await self._drive(record, backend, fresh=not record.attempted, background=True)
        except TunegateError as exc:  # kept on the row by `_drive`
            logger.warning("creating %s on %s failed: %s", record.id, backend.provider.name, _brief(exc))
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("creating %s on %s failed", record.id, backend.provider.name)

    async def aclose(self) -> None:
        """Stops background creations (each marks its row as `_drive` describes) and waits."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _replay(
        self, previous: JobRecord, attempt: JobRecord, backend: Backend, *, background: bool = False
    ) -> JobRecord:
        if previous.request_hash != attempt.request_hash:
            raise Conflict(
                "This idempotency key was already used with a different request.",
                code="idempotency_key_reused",
                param="request_id",
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.wait
        saw_driver = False
        current: JobRecord | None = previous
        while True:
            if current is None:  # deleted: the request we waited for never reached the provider
                raise _not_reached()
            if current.state == FAILED_TO_CREATE:
                raise stored_error(current.error or {})
            if current.state != INTENT:
                return current
            now = self._now()
            leased = current.lease_until is not None and current.lease_until > now
            if background and leased:
                return current  # a background task drives it; the intent is the answer
            # A background intent whose task ended without an outcome (its process stopped):
            # drive it again.
            if (
                background
                and not current.attempted
                and await self._repo.acquire_lease(current.id, now=now, until=now + int(self.settings.lease))
            ):
                self._spawn(current, backend)
                return current
            if leased:
                saw_driver = True
            elif saw_driver:
                # The request we waited for ended without an outcome: answer like it did (the
                # intent, or its transient error) rather than calling the provider once per waiter.
                if current.attempted:
                    return current
                raise Unavailable(
                    "The first request with this idempotency key could not confirm the job; retry.",
                    code="creation_pending",
                    retry_after=1.0,
                )
            elif await self._repo.acquire_lease(current.id, now=now, until=now + int(self.settings.lease)):
                return await self._drive(current, backend)
            if loop.time() >= deadline:
                raise Unavailable(
                    "A request with this idempotency key is still being processed; retry shortly.",
                    code="request_in_progress",
                    retry_after=1.0,
                )
            await asyncio.sleep(self.settings.poll_interval)
            current = await self._repo.get_any(current.id)

    async def _drive(
        self, record: JobRecord, backend: Backend, *, fresh: bool = False, background: bool = False
    ) -> JobRecord:
        """Take a leased intent to an outcome (see the module docstring, steps 2–5). `fresh`: this
        request inserted it just now, so no provider can hold its job yet. `background`: the
        caller already has the intent, so failures are kept on it (`_fail_visibly`)."""
        provider, account = backend.provider, backend.account
        if record.attempted and not fresh:
            # A create may have reached the provider: look, never create again.
            try:
                return await self.resolve(record, backend)
            finally:
                await self._release(record)
        try:
            native = await self._native_request(record, backend)
            if background and await self._cancelled_before_create(record):
                return await self._repo.get_any(record.id) or record
            if not record.attempted:
                await self._repo.mark_attempted(record.id, now=self._now())
                record = dataclasses.replace(record, attempted=True)
        except BaseException as exc:  # no create was sent: nothing exists at the provider
            if background:
                await self._fail_visibly(record, exc)
            elif isinstance(exc, _DEFINITE):  # e.g. the provider could not process a file
                await self._repo.fail(
                    record.id, state=FAILED_TO_CREATE, error=error_record(exc), now=self._now()
                )
            else:
                await self._discard(record)
            raise
        try:
            job = await provider.create_job(account, native, tag=record.id)
        except (*_DEFINITE, ProviderUnreachable, *_TRANSIENT_REFUSALS) as exc:
            # Nothing was created, and this was the intent's only create (an attempted intent
            # that is not fresh only ever looks, above): no job anywhere. A definite refusal is
            # kept for replays; otherwise a retry starts afresh (in the background: the row
            # fails visibly, since its caller already holds the id).
            if background:
                await self._fail_visibly(record, exc)
            elif isinstance(exc, _DEFINITE):
                await self._repo.fail(
                    record.id, state=FAILED_TO_CREATE, error=error_record(exc), now=self._now()
                )
            else:
                await self._discard(record)
            raise
        except Exception as exc:
            logger.warning(
                "%s create_job for %s: outcome unknown (%s); answering the intent",
                provider.name,
                record.id,
                _brief(exc),
            )
            try:
                return await self.resolve(record, backend)
            finally:
                await self._release(record)
        except BaseException:  # cancelled mid-call: the job may exist; let a retry look for it
            await self._release(record)
            raise
        _crash_point()
        try:
            if background:
                return await self._complete_and_cancel(record, job, backend)
            return await self._complete(record, job)
        except BaseException:
            # The job exists, tagged, and its intent is attempted: the reconciler (or a retry
            # with the same key, which looks by tag first) completes the row.
            await self._release(record)
            raise

    async def _cancelled_before_create(self, record: JobRecord) -> bool:
        """Whether a cancel was asked for while the intent's files were staged; if so the row
        ends `cancelled` with nothing created."""
        current = await self._repo.get_any(record.id)
        if current is None or not current.cancel_requested:
            return False
        error = {"class": "Cancelled", "code": "cancelled", "message": "Cancelled before it was created."}
        await self._repo.fail(record.id, state=FAILED, error=error, now=self._now(), status="cancelled")
        logger.info("%s was cancelled while its files were staged: not created", record.id)
        return True

    async def _fail_visibly(self, record: JobRecord, exc: BaseException) -> None:
        """Marks a background intent `failed` with `exc` (no create reached the provider)."""
        if isinstance(exc, TunegateError):
            error = error_record(exc)
        elif isinstance(exc, asyncio.CancelledError):
            error = {
                "class": "Unavailable",
                "code": "gateway_stopped",
                "message": f"The gateway stopped before the job was submitted to {record.provider}; "
                "nothing was created there. Create the job again.",
                "param": None,
            }
        else:
            error = {
                "class": "Internal",
                "code": "internal_error",
                "message": "The job could not be submitted (an internal error; see the gateway's log).",
                "param": None,
            }
        # Shielded: this runs while a cancellation unwinds and must still reach the database.
        await asyncio.shield(self._repo.fail(record.id, state=FAILED, error=error, now=self._now()))

    async def _release(self, record: JobRecord) -> None:
        # Shielded: this runs while a cancellation unwinds and must still reach the database.
        await asyncio.shield(self._repo.release_lease(record.id))

    async def _discard(self, record: JobRecord) -> None:
        """Delete an intent whose create never reached the provider (shielded like `_release`)."""
        await asyncio.shield(self._repo.discard_intent(record.id))

    async def _native_request(self, record: JobRecord, backend: Backend) -> dict[str, Any]:
        body = dict(record.request)
        for param in FILE_PARAMS:
            file_id = body.get(param)
            if file_id and await self._copier.is_gateway_file(record.owner, file_id):
                body[param] = await self._copier.native_file_id(
                    record.owner, file_id, backend, param=param, wait=True, request=record.request
                )
        return body

    async def _find(self, record: JobRecord, backend: Backend) -> JobObject | None:
        body = dict(record.request)
        for param in FILE_PARAMS:
            file_id = body.get(param)
            if file_id and is_well_formed(file_id, FILE_PREFIX):
                body[param] = await self._copier.known_native_id(file_id, record.account_key) or file_id
        created_after = record.created_at - self.settings.tag_lookback
        return await backend.find_by_tag(record.id, created_after=created_after, request=body)

    def _created(self, record: JobRecord, provider_job: JobObject) -> JobRecord:
        """The intent's row once completed with the provider's job."""
        return dataclasses.replace(
            with_provider_job(record, provider_job),
            state=CREATED,
            native_id=str(provider_job["id"]),
            lease_until=None,
            updated_at=self._now(),
        )

    async def _complete(self, record: JobRecord, provider_job: JobObject) -> JobRecord:
        created = self._created(record, provider_job)
        assert created.native_id is not None and created.snapshot is not None
        stored = await self._repo.complete(
            created.id,
            native_id=created.native_id,
            status=created.status,
            snapshot=created.snapshot,
            now=created.updated_at,
        )
        if stored:
            return created
        # Whoever completed it first (another request, the reconciler) wrote the same job.
        current = await self._repo.get_any(record.id)
        assert current is not None
        return current

    async def resolve(self, record: JobRecord, backend: Backend | None) -> JobRecord:
        """Complete an attempted intent if its job is found by tag (lazy resolution by a call
        that carries the credential); mark it `failed` when it is not found `abandon_after`
        after its creation and no request holds its lease. Other rows are returned unchanged.
        A provider that cannot be asked (an expected upstream failure) leaves the row as it is,
        with one WARNING line."""
        if record.state != INTENT or not record.attempted or backend is None:
            return record
        try:
            found = await self._find(record, backend)
        except TunegateError as exc:
            logger.warning("%s tag lookup for %s failed: %s", record.provider, record.id, _brief(exc))
            return record
        if found is not None:
            return await self._complete_and_cancel(record, found, backend)
        now = self._now()
        leased = record.lease_until is not None and record.lease_until > now
        if now - record.created_at >= self.settings.abandon_after and not leased:
            await self._abandon(record, now)
            current = await self._repo.get_any(record.id)
            return record if current is None else current
        return record

    async def _complete_and_cancel(
        self, record: JobRecord, provider_job: JobObject, backend: Backend
    ) -> JobRecord:
        """Complete the intent with the job found by its tag; then carry out a cancel asked for
        while it was unconfirmed (read back: it may have been asked for during the lookup)."""
        created = await self._complete(record, provider_job)
        current = await self._repo.get_any(record.id)
        if current is None or not current.cancel_requested or created.native_id is None:
            return created
        try:
            cancelled = await backend.provider.cancel_job(backend.account, created.native_id)
        except TunegateError as exc:
            logger.warning("%s cancel of %s failed: %s", record.provider, record.id, _brief(exc))
            return current
        updated = with_provider_job(current, cancelled)
        assert updated.snapshot is not None
        await self._repo.update_snapshot(
            record.id, status=updated.status, snapshot=updated.snapshot, now=self._now()
        )
        logger.info("cancelled %s at %s, as asked while it was unconfirmed", record.id, record.provider)
        return updated

    async def reconcile(self) -> ReconcileReport:
        """One pass over intents older than `reconcile_grace` whose account can be rebuilt:
        complete the ones found by tag; mark `failed` those not found after `abandon_after`
        (unless a live request still holds the lease)."""
        report = ReconcileReport()
        now = self._now()
        for record in await self._repo.intents_before(now - int(self.settings.reconcile_grace)):
            try:
                backend = self._backends.for_job(record, None)
                if backend is None:
                    report = dataclasses.replace(report, pending=report.pending + 1)
                    continue  # per-request credentials: resolved lazily by the next call
                if not record.attempted:  # its request died before any create: nothing to find
                    resolved = await self._abandon_unsent(record, now)
                else:
                    resolved = await self.resolve(record, backend)
            except Exception:
                logger.exception("reconciling %s failed", record.id)
                report = dataclasses.replace(report, pending=report.pending + 1)
                continue
            if resolved.state == CREATED:
                logger.info(
                    "reconciled %s: found at %s as %s", record.id, record.provider, resolved.native_id
                )
                report = dataclasses.replace(report, completed=report.completed + 1)
            elif resolved.state == FAILED:
                report = dataclasses.replace(report, failed=report.failed + 1)
            else:
                report = dataclasses.replace(report, pending=report.pending + 1)
        return report

    async def _abandon_unsent(self, record: JobRecord, now: int) -> JobRecord:
        leased = record.lease_until is not None and record.lease_until > now
        if now - record.created_at >= self.settings.abandon_after and not leased:
            await self._abandon(record, now)
            return dataclasses.replace(record, state=FAILED)
        return record

    async def _abandon(self, record: JobRecord, now: int) -> None:
        error = {
            "class": "Unavailable",
            "code": "creation_not_confirmed",
            "message": f"{record.provider} never confirmed this job, and it was not found by its tag.",
            "param": None,
        }
        if await self._repo.fail(record.id, state=FAILED, error=error, now=now):
            logger.warning("gave up on intent %s: not found at %s", record.id, record.provider)
