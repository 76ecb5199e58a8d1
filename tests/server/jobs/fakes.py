"""An in-memory Provider, a dict-configured router and a provider set, for the job tests."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from collections.abc import AsyncIterator, Mapping
from typing import Any

from tunegate.server.errors import InvalidArgument, NotFound
from tunegate.server.providers.interface import (
    Account,
    Capability,
    JobObject,
    Page,
    ProviderDownload,
    ProviderFile,
    unsupported,
)

TAG_KEY = "tunegate_tag"
_counter = itertools.count(1)


def _native(prefix: str) -> str:
    return f"{prefix}{next(_counter):06d}native"


class FakeProvider:
    """Records every call in `calls` as (operation, …). Knobs: `create_error` (raised before a
    job exists), `create_error_after` (raised after the job exists), `create_delay`,
    `upload_status` and `file_statuses` (what `get_file` reports, in turn, then `processed`)."""

    def __init__(
        self,
        name: str = "openai",
        capabilities: frozenset[Capability] = frozenset(Capability) - {Capability.STAGED_FILES},
        *,
        pages_by_id: bool = False,
    ) -> None:
        self.name = name
        self.capabilities = capabilities
        self.pages_by_id = pages_by_id  # False: opaque offsets as page tokens
        self.calls: list[tuple[Any, ...]] = []
        self.jobs: dict[str, dict[str, Any]] = {}  # native id → job, in creation order
        self.files: dict[str, bytes] = {}
        self.create_error: Exception | None = None
        self.create_error_after: Exception | None = None
        self.create_delay = 0.0
        self.upload_status = "processed"
        self.file_statuses: list[tuple[str, str | None]] = []
        self.events: dict[str, list[dict[str, Any]]] = {}  # native job id → events, oldest first
        self.checkpoints: dict[str, list[dict[str, Any]]] = {}
        self.now = 1_750_000_000

    def ops(self, name: str) -> list[tuple[Any, ...]]:
        return [call for call in self.calls if call[0] == name]

    async def upload_file(
        self, account: Account, *, filename: str, purpose: str, size: int, chunks: AsyncIterator[bytes]
    ) -> ProviderFile:
        data = b"".join([chunk async for chunk in chunks])
        assert len(data) == size
        native = _native("file-")
        self.files[native] = data
        self.calls.append(("upload_file", account.key, filename, purpose, size))
        return ProviderFile(id=native, status=self.upload_status)

    async def get_file(self, account: Account, file_id: str) -> ProviderFile:
        self.calls.append(("get_file", file_id))
        if file_id not in self.files:
            raise NotFound(f"No such File object: {file_id}", code="file_not_found")
        status, details = self.file_statuses.pop(0) if self.file_statuses else ("processed", None)
        return ProviderFile(id=file_id, status=status, status_details=details)

    def check_request(self, account: Account, request: Mapping[str, Any]) -> None:
        self.calls.append(("check_request",))
        if request.get("suffix") == "provider-refuses":
            raise InvalidArgument("The provider refuses this suffix.", code="invalid_value", param="suffix")

    async def create_job(self, account: Account, request: Mapping[str, Any], *, tag: str) -> JobObject:
        self.calls.append(("create_job", account.key, dict(request), tag))
        if self.create_delay:
            await asyncio.sleep(self.create_delay)
        if self.create_error is not None:
            raise self.create_error
        native = _native("ftjob-")
        self.now += 1
        job = {
            "object": "fine_tuning.job",
            "id": native,
            "created_at": self.now,
            "model": request["model"],
            "status": "validating_files",
            "training_file": request["training_file"],
            "validation_file": request.get("validation_file"),
            "hyperparameters": {"n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto"},
            "metadata": {**(request.get("metadata") or {}), TAG_KEY: tag},
            "seed": request.get("seed", 7),
            "organization_id": "org-fake",
            "result_files": [],
            "error": None,
            "fine_tuned_model": None,
            "finished_at": None,
            "trained_tokens": None,
            "usage_metrics": {"tokens": 1},  # an extra key the contract does not have
        }
        self.jobs[native] = job
        if self.create_error_after is not None:
            raise self.create_error_after
        return self._out(job)

    def _out(self, job: dict[str, Any]) -> JobObject:
        out = dict(job)
        metadata = {k: v for k, v in (job.get("metadata") or {}).items() if k != TAG_KEY}
        out["metadata"] = metadata or None
        return out

    async def find_job_by_tag(self, account: Account, tag: str, *, created_after: int) -> JobObject | None:
        self.calls.append(("find_job_by_tag", tag))
        for job in self.jobs.values():
            if (job.get("metadata") or {}).get(TAG_KEY) == tag:
                return self._out(job)
        return None

    async def get_job(self, account: Account, job_id: str) -> JobObject:
        self.calls.append(("get_job", job_id))
        return self._out(self._job(job_id))

    async def list_jobs(self, account: Account, *, limit: int, page_token: str | None) -> Page:
        self.calls.append(("list_jobs", limit, page_token))
        newest = list(reversed(self.jobs.values()))
        if self.pages_by_id:
            ids = [job["id"] for job in newest]
            if page_token is not None and page_token not in ids:
                raise InvalidArgument(f"No such job: {page_token}", code="invalid_cursor", param="after")
            start = 0 if page_token is None else ids.index(page_token) + 1
        else:
            start = int(page_token or 0)
        data = [self._out(job) for job in newest[start : start + limit]]
        more = start + limit < len(newest)
        token = (data[-1]["id"] if self.pages_by_id else str(start + limit)) if more else None
        return Page(data=data, has_more=more, next_token=token)

    async def _set_status(self, op: str, job_id: str, status: str) -> JobObject:
        self.calls.append((op, job_id))
        if op in ("pause_job", "resume_job") and Capability.PAUSE not in self.capabilities:
            raise unsupported(self.name, op)
        self._job(job_id)["status"] = status
        return self._out(self._job(job_id))

    def _job(self, job_id: str) -> dict[str, Any]:
        """A job by native id; an unknown id is the provider's 404, as a real one answers."""
        if job_id not in self.jobs:
            raise NotFound(f"No such job: {job_id}", code="job_not_found", param="fine_tuning_job_id")
        return self.jobs[job_id]

    async def cancel_job(self, account: Account, job_id: str) -> JobObject:
        return await self._set_status("cancel_job", job_id, "cancelled")

    async def pause_job(self, account: Account, job_id: str) -> JobObject:
        return await self._set_status("pause_job", job_id, "paused")

    async def resume_job(self, account: Account, job_id: str) -> JobObject:
        return await self._set_status("resume_job", job_id, "running")

    def _page(self, items: list[dict[str, Any]], limit: int, page_token: str | None) -> Page:
        newest = list(reversed(items))
        start = int(page_token or 0)
        more = start + limit < len(newest)
        return Page(
            data=newest[start : start + limit], has_more=more, next_token=str(start + limit) if more else None
        )

    async def list_events(self, account: Account, job_id: str, *, limit: int, page_token: str | None) -> Page:
        self.calls.append(("list_events", job_id, page_token))
        return self._page(self.events.get(job_id, []), limit, page_token)

    async def list_checkpoints(
        self, account: Account, job_id: str, *, limit: int, page_token: str | None
    ) -> Page:
        self.calls.append(("list_checkpoints", job_id, page_token))
        return self._page(self.checkpoints.get(job_id, []), limit, page_token)

    def add_event(self, job_id: str, message: str, level: str = "info") -> None:
        events = self.events.setdefault(job_id, [])
        events.append(
            {
                "object": "fine_tuning.job.event",
                "id": f"ftevent-native{len(events):04d}",
                "created_at": 1_750_000_000 + len(events),
                "level": level,
                "message": message,
                "type": "message",
            }
        )

    def add_checkpoint(self, job_id: str, step: int) -> None:
        items = self.checkpoints.setdefault(job_id, [])
        items.append(
            {
                "object": "fine_tuning.job.checkpoint",
                "id": f"ftckpt_native{step:04d}",
                "created_at": 1_750_000_000 + step,
                "fine_tuned_model_checkpoint": f"ft:gpt-4o-mini:org::ckpt-step-{step}",
                "fine_tuning_job_id": job_id,
                "step_number": step,
                "metrics": {"step": step, "train_loss": 1.0 / step, "azure_only_metric": 3.0},
            }
        )

    async def download_file(self, account: Account, file_id: str) -> ProviderDownload:
        raise unsupported(self.name, "downloading result files")

    async def aclose(self) -> None:
        pass


class FakeProviders:
    """`ProviderSet`'s lookup over fakes."""

    def __init__(self, *providers: FakeProvider) -> None:
        self.by_name = {p.name: p for p in providers}

    def get(self, name: str) -> FakeProvider:
        try:
            return self.by_name[name]
        except KeyError:
            raise InvalidArgument(f"Unknown provider '{name}'.", code="unknown_provider") from None


class StubRouter:
    """Per-request: `x-portkey-provider` + `authorization: Bearer t` → key `<p>:key:<sha(t)>`;
    with `provider_hint` the bearer alone suffices. `x-portkey-virtual-key: name` → `vk:name`
    (rebuildable by `account_for`) on the provider configured for that name."""

    def __init__(self, virtual_keys: Mapping[str, str] | None = None) -> None:
        self.virtual_keys = dict(virtual_keys or {})  # name → provider

    def resolve(
        self,
        metadata: Mapping[str, str],
        body_options: Mapping[str, Any] | None = None,
        *,
        provider_hint: str | None = None,
        body_param: str = "provider_options",
    ) -> Account | None:
        options = dict(body_options or {})
        vk = metadata.get("x-portkey-virtual-key") or options.get("virtual_key")
        if vk:
            return self.account_for(f"vk:{vk}")
        provider = metadata.get("x-portkey-provider") or options.get("provider")
        token = metadata.get("authorization", "").removeprefix("Bearer ").strip()
        if provider is None and token and provider_hint:
            provider = provider_hint
        if provider is None:
            return None
        if not token:
            raise InvalidArgument("No credentials.", code="missing_credentials", param="authorization")
        fingerprint = hashlib.sha256(token.encode()).hexdigest()[:16]
        return Account(
            provider=provider, key=f"{provider}:key:{fingerprint}", base_url="http://fake", credential=token
        )

    def account_for(self, account_key: str) -> Account | None:
        name = account_key.removeprefix("vk:")
        if not account_key.startswith("vk:") or name not in self.virtual_keys:
            return None
        return Account(
            provider=self.virtual_keys[name],
            key=account_key,
            base_url="http://fake",
            credential="vk-secret",
            from_virtual_key=True,
        )
