"""`tunegate.v1.FineTuning`: proto ⇄ OpenAI JSON around `tunegate.server.jobs.JobService`, nothing else.

A create request becomes OpenAI JSON with `tunegate.openai_json.to_openai`; the domain answers
OpenAI JSON, which `_wire.reply` parses into the declared response message — one conversion per
answer (the edge renders that message back to JSON). Provider JSON may carry keys the contract
does not know (`usage_metrics`, `shared_with_openai`, …): the lenient reading drops them.
"""

from __future__ import annotations

from typing import Any

from tunegate.openai_json import to_openai
from tunegate.server.jobs import ItemPage, JobService
from tunegate.server.servicers._wire import Context, call_metadata, caller, idempotency_key, reply
from tunegate.v1 import fine_tuning_pb2 as ft
from tunegate.v1 import fine_tuning_pb2_grpc


class FineTuningServicer(fine_tuning_pb2_grpc.FineTuningServicer):
    """Serves `/tunegate.v1.FineTuning/*` from a `JobService`."""

    def __init__(self, jobs: JobService) -> None:
        self._jobs = jobs

    async def CreateFineTuningJob(
        self, request: ft.CreateFineTuningJobRequest, context: Context
    ) -> ft.FineTuningJob:
        job = await self._jobs.create(
            caller(context),
            to_openai(request),
            metadata=call_metadata(context),
            request_id=idempotency_key(context),
        )
        return reply(ft.FineTuningJob, job)

    async def ListFineTuningJobs(
        self, request: ft.ListFineTuningJobsRequest, context: Context
    ) -> ft.ListFineTuningJobsResponse:
        page = await self._jobs.list(
            caller(context),
            metadata=call_metadata(context),
            after=request.after or None,
            limit=request.limit if request.HasField("limit") else None,
            metadata_filter=dict(request.metadata.values) if request.HasField("metadata") else None,
        )
        return reply(ft.ListFineTuningJobsResponse, {"data": page.data, "has_more": page.has_more})

    async def GetFineTuningJob(
        self, request: ft.GetFineTuningJobRequest, context: Context
    ) -> ft.FineTuningJob:
        job = await self._jobs.retrieve(
            caller(context), request.fine_tuning_job_id, metadata=call_metadata(context)
        )
        return reply(ft.FineTuningJob, job)

    async def CancelFineTuningJob(
        self, request: ft.CancelFineTuningJobRequest, context: Context
    ) -> ft.FineTuningJob:
        job = await self._jobs.cancel(
            caller(context), request.fine_tuning_job_id, metadata=call_metadata(context)
        )
        return reply(ft.FineTuningJob, job)

    async def PauseFineTuningJob(
        self, request: ft.PauseFineTuningJobRequest, context: Context
    ) -> ft.FineTuningJob:
        job = await self._jobs.pause(
            caller(context), request.fine_tuning_job_id, metadata=call_metadata(context)
        )
        return reply(ft.FineTuningJob, job)

    async def ResumeFineTuningJob(
        self, request: ft.ResumeFineTuningJobRequest, context: Context
    ) -> ft.FineTuningJob:
        job = await self._jobs.resume(
            caller(context), request.fine_tuning_job_id, metadata=call_metadata(context)
        )
        return reply(ft.FineTuningJob, job)

    async def ListFineTuningEvents(
        self, request: ft.ListFineTuningEventsRequest, context: Context
    ) -> ft.ListFineTuningEventsResponse:
        page = await self._jobs.list_events(
            caller(context),
            request.fine_tuning_job_id,
            metadata=call_metadata(context),
            after=request.after or None,
            limit=request.limit if request.HasField("limit") else None,
        )
        return reply(ft.ListFineTuningEventsResponse, {"data": page.data, "has_more": page.has_more})

    async def ListFineTuningCheckpoints(
        self, request: ft.ListFineTuningCheckpointsRequest, context: Context
    ) -> ft.ListFineTuningCheckpointsResponse:
        page: ItemPage = await self._jobs.list_checkpoints(
            caller(context),
            request.fine_tuning_job_id,
            metadata=call_metadata(context),
            after=request.after or None,
            limit=request.limit if request.HasField("limit") else None,
        )
        body: dict[str, Any] = {"data": page.data, "has_more": page.has_more}
        if page.first_id is not None and page.last_id is not None:
            body.update(first_id=page.first_id, last_id=page.last_id)
        return reply(ft.ListFineTuningCheckpointsResponse, body)
