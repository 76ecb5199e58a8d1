"""The official SDKs, pointed at the gateway, with every JSON response checked against the spec."""

from __future__ import annotations

import re
from typing import Any

import openai

from tests.openapi_schema import validate

# (method, path regex under /v1) → the OpenAI component schema its 2xx body must satisfy.
RESPONSE_SCHEMAS: list[tuple[str, re.Pattern[str], str]] = [
    ("POST", re.compile(r"/files"), "OpenAIFile"),
    ("GET", re.compile(r"/files"), "ListFilesResponse"),
    ("GET", re.compile(r"/files/[^/]+"), "OpenAIFile"),
    ("DELETE", re.compile(r"/files/[^/]+"), "DeleteFileResponse"),
    ("POST", re.compile(r"/uploads"), "Upload"),
    ("POST", re.compile(r"/uploads/[^/]+/parts"), "UploadPart"),
    ("POST", re.compile(r"/uploads/[^/]+/(complete|cancel)"), "Upload"),
    ("POST", re.compile(r"/fine_tuning/jobs"), "FineTuningJob"),
    ("GET", re.compile(r"/fine_tuning/jobs"), "ListPaginatedFineTuningJobsResponse"),
    ("GET", re.compile(r"/fine_tuning/jobs/[^/]+"), "FineTuningJob"),
    ("POST", re.compile(r"/fine_tuning/jobs/[^/]+/(cancel|pause|resume)"), "FineTuningJob"),
    ("GET", re.compile(r"/fine_tuning/jobs/[^/]+/events"), "ListFineTuningJobEventsResponse"),
    ("GET", re.compile(r"/fine_tuning/jobs/[^/]+/checkpoints"), "ListFineTuningJobCheckpointsResponse"),
    ("POST", re.compile(r"/chat/completions"), "CreateChatCompletionResponse"),
    ("GET", re.compile(r"/models"), "ListModelsResponse"),
    ("GET", re.compile(r"/models/.+"), "Model"),  # a model id may hold a `/` (sent as %2F)
]


class SpecViolation(AssertionError):
    """A gateway response that does not match OpenAI's published schema."""


def schema_for(method: str, path: str) -> str | None:
    """The schema a successful response to `method path` (path after /v1) must satisfy."""
    for verb, pattern, schema in RESPONSE_SCHEMAS:
        if verb == method and pattern.fullmatch(path):
            return schema
    return None


def check_response(response: Any) -> None:
    """httpx response hook: validates the body, and that every response carries x-request-id."""
    if "x-request-id" not in response.headers:
        raise SpecViolation(f"{response.request.method} {response.request.url}: no x-request-id")
    path = response.request.url.path.split("/v1", 1)[-1]
    if path.endswith("/content") and response.status_code == 200:
        return
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        return  # a stream: read by the SDK as it arrives (tests check its chunks themselves)
    response.read()
    if response.status_code >= 400:
        validate("ErrorResponse", response.json())
        if "x-should-retry" not in response.headers:
            raise SpecViolation(f"error response without x-should-retry: {response.status_code}")
        return
    schema = schema_for(response.request.method, path)
    if schema is None:
        raise SpecViolation(f"no schema known for {response.request.method} {path}")
    body = response.json()
    # OpenAI's pause endpoint answers `"status": "paused"` (its own example), a value the job
    # schema's enum predates: check everything else against the schema, in lists too.
    if schema == "FineTuningJob":
        body = _paused_as_running(body)
    elif schema == "ListPaginatedFineTuningJobsResponse":
        body = {**body, "data": [_paused_as_running(job) for job in body.get("data") or []]}
    validate(schema, body)


def _paused_as_running(job: Any) -> Any:
    if isinstance(job, dict) and job.get("status") == "paused":
        return {**job, "status": "running"}
    return job


def openai_client(base_url: str, api_key: str, **kwargs: Any) -> openai.OpenAI:
    """An `openai.OpenAI` whose every response is validated against the spec."""
    http_client = openai.DefaultHttpxClient(event_hooks={"response": [check_response]})
    return openai.OpenAI(api_key=api_key, base_url=base_url, http_client=http_client, **kwargs)
