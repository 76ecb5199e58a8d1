"""`tunegate.v1.FineTuning`: proto ⇄ domain around `tunegate.server.jobs.JobService`, nothing else.

A create request becomes the domain's OpenAI create body with `tunegate.openai_json.to_openai`;
the other requests become arguments. The domain answers the declared response message, which
is returned as it is (the edge renders it to JSON).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

from tunegate.openai_json import to_openai
from tunegate.server.jobs import JobService
from tunegate.server.servicers._wire import Context, call_metadata, caller, idempotency_key
from tunegate.v1 import fine_tuning_pb2 as ft
from tunegate.v1 import fine_tuning_pb2_grpc


class FineTuningServicer(fine_tuning_pb2_grpc.FineTuningServicer):
    """Serves `/tunegate.v1.FineTuning/*` from a `JobService`."""

    def __init__(self, jobs: JobService) -> None:
        self._jobs = jobs

    async def CreateFineTuningJob(
        self, request: ft.CreateFineTuningJobRequest, context: Context
    ) -> ft.FineTuningJob:
        return await self._jobs.create(
            caller(context),
            to_openai(request),
            metadata=call_metadata(context),
            request_id=idempotency_key(context),
        )

    async def ListFineTuningJobs(
        self, request: ft.ListFineTuningJobsRequest, context: Context
    ) -> ft.ListFineTuningJobsResponse:
        return await self._jobs.list(
            caller(context),
            metadata=call_metadata(context),
            after=request.after or None,
            limit=request.limit if request.HasField("limit") else None,
            metadata_filter=dict(request.metadata.values) if request.HasField("metadata") else None,
        )

    async def GetFineTuningJob(
        self, request: ft.GetFineTuningJobRequest, context: Context
    ) -> ft.FineTuningJob:
        return await self._jobs.retrieve(
            caller(context), request.fine_tuning_job_id, metadata=call_metadata(context)
        )

    async def CancelFineTuningJob(
        self, request: ft.CancelFineTuningJobRequest, context: Context
    ) -> ft.FineTuningJob:
        return await self._jobs.cancel(
            caller(context), request.fine_tuning_job_id, metadata=call_metadata(context)
        )

    async def PauseFineTuningJob(
        self, request: ft.PauseFineTuningJobRequest, context: Context
    ) -> ft.FineTuningJob:
        return await self._jobs.pause(
            caller(context), request.fine_tuning_job_id, metadata=call_metadata(context)
        )

    async def ResumeFineTuningJob(
        self, request: ft.ResumeFineTuningJobRequest, context: Context
    ) -> ft.FineTuningJob:
        return await self._jobs.resume(
            caller(context), request.fine_tuning_job_id, metadata=call_metadata(context)
        )

    async def ListFineTuningEvents(
        self, request: ft.ListFineTuningEventsRequest, context: Context
    ) -> ft.ListFineTuningEventsResponse:
        return await self._jobs.list_events(
            caller(context),
            request.fine_tuning_job_id,
            metadata=call_metadata(context),
            after=request.after or None,
            limit=request.limit if request.HasField("limit") else None,
        )

    async def WatchFineTuningJob(
        self, request: ft.WatchFineTuningJobRequest, context: Context
    ) -> AsyncIterator[ft.FineTuningJobUpdate]:
        updates = self._jobs.watch(
            caller(context),
            request.fine_tuning_job_id,
            metadata=call_metadata(context),
            after=request.after or None,
        )
        async with aclosing(updates):
            async for update in updates:
                yield update

    async def ListFineTuningCheckpoints(
        self, request: ft.ListFineTuningCheckpointsRequest, context: Context
    ) -> ft.ListFineTuningCheckpointsResponse:
        return await self._jobs.list_checkpoints(
            caller(context),
            request.fine_tuning_job_id,
            metadata=call_metadata(context),
            after=request.after or None,
            limit=request.limit if request.HasField("limit") else None,
        )
