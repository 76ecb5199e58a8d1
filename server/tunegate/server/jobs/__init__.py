"""The fine-tuning job registry: gateway ids, idempotent creates that are never lost or
doubled, provider file copies, mirrored events and checkpoints, and listing.

Public API::

    jobs = JobService(database, files, router, providers, settings=JobSettings())
    job = await jobs.create(owner, body, metadata=call_metadata)   # OpenAI JSON in, FineTuningJob out
    job = await jobs.retrieve(owner, "ftjob-…", metadata=call_metadata)
    page = await jobs.list(owner, metadata=call_metadata)          # ListFineTuningJobsResponse
    await jobs.reconcile()                                          # at start-up

Answers are the contract's messages (`tunegate.v1.fine_tuning_pb2`), rendered from the registry
by `_render`; see `_create` for the creation protocol's theory of operation.
"""

from __future__ import annotations

from tunegate.server.jobs._backends import AccountRouter, Backend, Backends, ProviderLookup, capabilities
from tunegate.server.jobs._create import (
    CREATED,
    FAILED,
    FAILED_TO_CREATE,
    FAULT_CRASH_AFTER_PROVIDER_CREATE,
    INTENT,
    JOB_PREFIX,
    CreationSettings,
    JobCreator,
    ReconcileReport,
    request_hash,
)
from tunegate.server.jobs._monitor import JobMonitor, MonitorSettings
from tunegate.server.jobs._provider_files import FileCopySettings, ProviderFileCopier
from tunegate.server.jobs._service import (
    CHECKPOINT_PREFIX,
    EVENT_PREFIX,
    JobService,
    JobSettings,
)
from tunegate.server.jobs._validation import check_create_request

__all__ = [
    "CHECKPOINT_PREFIX",
    "CREATED",
    "EVENT_PREFIX",
    "FAILED",
    "FAILED_TO_CREATE",
    "FAULT_CRASH_AFTER_PROVIDER_CREATE",
    "INTENT",
    "JOB_PREFIX",
    "AccountRouter",
    "Backend",
    "Backends",
    "CreationSettings",
    "FileCopySettings",
    "JobCreator",
    "JobMonitor",
    "JobService",
    "JobSettings",
    "MonitorSettings",
    "ProviderFileCopier",
    "ProviderLookup",
    "ReconcileReport",
    "capabilities",
    "check_create_request",
    "request_hash",
]
