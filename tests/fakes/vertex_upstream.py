"""A fake Vertex AI on one loopback port: `tuningJobs` (create, get, list, cancel), the tuned
endpoint's chat (`FakeVertexChat`), GCS's resumable uploads (`FakeGCS`) and an OAuth token
endpoint (`FakeGoogleOAuth`) — so one custom host stands in for every Google service a call uses.

Every `tuningJobs` request body and every job it answers is checked against the `aiplatform` v1
discovery document's `GoogleCloudAiplatformV1TuningJob` schema (`tests/fakes/_discovery_schema.py`);
a request that breaks it is a 400 recorded in `violations`. Jobs move on only when a test says so
(`advance`): QUEUED → RUNNING → SUCCEEDED (with `tunedModel`, checkpoints and `tuningDataStats`).
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from tests.fakes._common import RECORD, ApiError
from tests.fakes._discovery_schema import validate
from tests.fakes.gcs import FakeGCS
from tests.fakes.google_oauth import FakeGoogleOAuth
from tests.fakes.vertex_chat import FakeVertexChat

_JOBS = "/v1/projects/{project}/locations/{location}/tuningJobs"
_STEPS = ("JOB_STATE_QUEUED", "JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED")
_TERMINAL = frozenset({"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"})


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class FakeVertex(FakeVertexChat):
    """Vertex AI tuning, chat, GCS and OAuth on one port (see the module docstring)."""

    def __init__(self, *, buckets: set[str] | None = None) -> None:
        super().__init__()
        self.gcs = FakeGCS(buckets=set(buckets or ()))
        self.oauth = FakeGoogleOAuth()
        self.jobs: dict[str, dict[str, Any]] = {}
        self.creates = 0

    def add_routes(self, app: web.Application) -> None:
        super().add_routes(app)
        app.add_routes(
            [
                web.post(_JOBS, self._create),
                web.get(_JOBS, self._list),
                web.get(_JOBS + "/{job}", self._get),
                web.post(_JOBS + "/{job}:cancel", self._cancel),
                web.post("/upload/storage/v1/b/{bucket}/o", self.gcs._initiate),
                web.put("/upload/session/{sid}", self.gcs._put),
                web.delete("/upload/session/{sid}", self.gcs._delete),
                web.post("/token", self.oauth._token),
            ]
        )

    async def start(self, port: int = 0) -> None:
        await super().start(port)
        self.gcs.url = self.host  # its session URIs point back here
        self.oauth.url = f"{self.host}/token"

    # -- test-facing -----------------------------------------------------------------------------
    def advance(self, job_id: str, to: str | None = None, steps: int = 1) -> str:
        job = self.jobs[job_id]
        for _ in range(steps if to is None else len(_STEPS)):
            state = job["state"]
            if state in _TERMINAL or state == to:
                break
            job["state"] = _STEPS[min(_STEPS.index(state) + 1, len(_STEPS) - 1)] if state in _STEPS else state
            job["updateTime"] = _now()
            if job["state"] == "JOB_STATE_RUNNING":
                job["startTime"] = job["updateTime"]
                job["tuningDataStats"] = {
                    "supervisedTuningDataStats": {
                        "tuningDatasetExampleCount": "12",
                        "totalBillableTokenCount": "3456",
                        "tuningStepCount": "30",
                    }
                }
            if job["state"] == "JOB_STATE_SUCCEEDED":
                job["endTime"] = job["updateTime"]
                base = job["name"].rsplit("/tuningJobs/", 1)[0]
                number = str(abs(hash(job_id)) % 10**12)
                job["tunedModel"] = {
                    "model": f"{base}/models/{number}@1",
                    "endpoint": f"{base}/endpoints/{number}",
                    "checkpoints": [
                        {
                            "checkpointId": "1",
                            "epoch": "1",
                            "step": "15",
                            "endpoint": f"{base}/endpoints/{number}1",
                        },
                        {
                            "checkpointId": "2",
                            "epoch": "2",
                            "step": "30",
                            "endpoint": f"{base}/endpoints/{number}",
                        },
                    ],
                }
        self._check(job, "response")
        return str(job["state"])

    def fail(self, job_id: str, message: str) -> None:
        job = self.jobs[job_id]
        job.update(state="JOB_STATE_FAILED", endTime=_now(), error={"code": 3, "message": message})

    def job_count(self) -> int:
        return len(self.jobs)

    # -- handlers ------------------------------------------------------------------------------
    def _check(self, value: Any, direction: str) -> None:
        errors = validate(value, "GoogleCloudAiplatformV1TuningJob", direction=direction)  # type: ignore[arg-type]
        if errors:
            raise ApiError(400, f"Invalid TuningJob: {'; '.join(errors)}", violation=True)

    def _authorized(self, request: web.Request) -> None:
        if not request.headers.get("Authorization", "").startswith("Bearer ya29."):
            raise ApiError(401, "Request is missing a valid OAuth 2 access token.", violation=True)

    async def _create(self, request: web.Request) -> web.Response:
        self._authorized(request)
        body = request[RECORD].json
        if not isinstance(body, dict):
            raise ApiError(400, "The request body must be a JSON object.", violation=True)
        self._check(body, "request")
        spec = body.get("supervisedTuningSpec") or body.get("preferenceOptimizationSpec") or {}
        if not str(spec.get("trainingDatasetUri", "")).startswith("gs://"):
            raise ApiError(400, "trainingDatasetUri must be a gs:// URI.", violation=True)
        self.creates += 1
        job_id = str(secrets.randbelow(10**18))
        info = request.match_info
        now = _now()
        job = {
            **body,
            "name": f"projects/{info['project']}/locations/{info['location']}/tuningJobs/{job_id}",
            "state": "JOB_STATE_QUEUED",
            "createTime": now,
            "updateTime": now,
        }
        self.jobs[job_id] = job
        self._check(job, "response")
        return web.json_response(job)

    async def _get(self, request: web.Request) -> web.Response:
        self._authorized(request)
        job = self.jobs.get(request.match_info["job"])
        if job is None:
            raise ApiError(404, "TuningJob not found.")
        return web.json_response(job)

    async def _list(self, request: web.Request) -> web.Response:
        self._authorized(request)
        jobs = sorted(self.jobs.values(), key=lambda j: j["createTime"], reverse=True)
        wanted = request.query.get("filter", "")
        if wanted:
            key, _, value = wanted.partition("=")
            if not key.startswith("labels."):
                raise ApiError(400, f"Unsupported filter {wanted!r}.", violation=True)
            label, value = key.removeprefix("labels."), value.strip('"')
            jobs = [j for j in jobs if (j.get("labels") or {}).get(label) == value]
        size = int(request.query.get("pageSize") or 100)
        start = int(request.query.get("pageToken") or 0)
        page = jobs[start : start + size]
        answer: dict[str, Any] = {"tuningJobs": page}
        if start + size < len(jobs):
            answer["nextPageToken"] = str(start + size)
        return web.json_response(answer)

    async def _cancel(self, request: web.Request) -> web.Response:
        self._authorized(request)
        job = self.jobs.get(request.match_info["job"])
        if job is None:
            raise ApiError(404, "TuningJob not found.")
        if job["state"] not in _TERMINAL:
            job.update(state="JOB_STATE_CANCELLED", endTime=_now(), error={"code": 1, "message": "CANCELED"})
        return web.json_response({})
