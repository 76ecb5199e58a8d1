"""A scripted upstream for adapter tests: `httpx.MockTransport`, no sockets.

`Upstream.on(method, path, *replies)` queues replies for a route (the last one repeats); a reply
is an `httpx.Response`, an exception to raise (a timeout, a connection error) or a function of
the request. Every request is recorded, body included (MockTransport reads it first).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
from tunegate.server.providers import Account

Reply = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]

SECRET = "sk-test-SECRET-credential-0123456789"


class Upstream:
    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self._routes: dict[tuple[str, str], list[Reply]] = {}

    def on(self, method: str, path: str, *replies: Reply) -> Upstream:
        self._routes[(method.upper(), path)] = list(replies)
        return self

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        queue = self._routes.get((request.method, request.url.path))
        if not queue:
            return httpx.Response(404, json={"error": {"message": f"no route {request.url.path}"}})
        reply = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(reply, Exception):
            raise reply
        if isinstance(reply, httpx.Response):
            return reply
        return reply(request)

    def last_json(self) -> Any:
        return json.loads(self.requests[-1].content)


class Sleeps:
    """An injectable `sleep` that records the delays instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def openai_account(**options: str) -> Account:
    return Account(
        provider="openai",
        key="openai:key:test",
        base_url="http://upstream.test/v1",
        credential=SECRET,
        options=options,
    )


def azure_account(api_version: str = "2024-10-21", **options: str) -> Account:
    return Account(
        provider="azure-openai",
        key="azure-openai:key:test",
        base_url="http://upstream.test/myres/openai/",
        credential=SECRET,
        options={"resource_name": "myres", "deployment_id": "dep", "api_version": api_version, **options},
    )


def openai_job(job_id: str = "ftjob-abc", **fields: Any) -> dict[str, Any]:
    """An OpenAI `fine_tuning.job` as the API sends it."""
    job: dict[str, Any] = {
        "object": "fine_tuning.job",
        "id": job_id,
        "model": "gpt-4o-mini-2024-07-18",
        "created_at": 1_750_000_100,
        "fine_tuned_model": None,
        "organization_id": "org-123",
        "result_files": [],
        "status": "queued",
        "validation_file": None,
        "training_file": "file-train",
        "hyperparameters": {"n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto"},
        "trained_tokens": None,
        "error": None,
        "finished_at": None,
        "integrations": None,
        "seed": 42,
        "estimated_finish": None,
        "metadata": None,
    }
    job.update(fields)
    return job


def page(data: list[dict[str, Any]], has_more: bool = False) -> httpx.Response:
    return httpx.Response(200, json={"object": "list", "data": data, "has_more": has_more})
