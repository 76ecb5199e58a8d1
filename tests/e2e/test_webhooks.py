"""Webhooks end to end: an endpoint registered over REST receives the signed
`fine_tuning.job.succeeded` event of a job run on the (spec-checking) fake OpenAI, after a 500
is retried with the same event id; `openai`'s `client.webhooks.unwrap()` accepts the delivery
and rejects a tampered one. Endpoints are the caller's own; private hosts are refused."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from tunegate.server.webhooks import WebhookSettings

from tests.conftest import Gateway, start_gateway
from tests.e2e.providers import routing_for, write_training
from tests.e2e.sdk import openai_client
from tests.fakes import FakeAzureOpenAI, FakeOpenAI, start_fake_azure_in_thread, start_fake_openai_in_thread
from tests.server.webhooks.receiver import Receiver

MODEL = "gpt-4o-mini-2024-07-18"


class ThreadedReceiver:
    """A `Receiver` served from its own event loop in a daemon thread."""

    def __init__(self, statuses: list[int]) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.receiver = asyncio.run_coroutine_threadsafe(
            Receiver(statuses=statuses).start(), self.loop
        ).result(10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.receiver.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, FakeOpenAI]]:
    fake: FakeOpenAI = start_fake_openai_in_thread(steps_per_get=0)
    azure: FakeAzureOpenAI = start_fake_azure_in_thread()
    webhooks = WebhookSettings(allowed_hosts=("127.0.0.1",), backoff_seconds=0.3, poll_seconds=0.2)
    gateway = start_gateway(
        tmp_path_factory.mktemp("webhooks"), routing=routing_for(fake, azure), webhooks=webhooks
    )
    yield gateway, fake
    gateway.close()
    fake.close()
    azure.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    threaded = ThreadedReceiver([500])  # the first attempt fails, the retry succeeds
    yield threaded.receiver
    threaded.close()


def rest(gateway: Gateway, api_key: str) -> httpx.Client:
    return httpx.Client(base_url=gateway.base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=10)


def test_a_succeeded_job_is_delivered_signed_after_a_retry(
    stack: tuple[Gateway, FakeOpenAI], receiver: Receiver, api_key: str, tmp_path: Path
) -> None:
    gateway, fake = stack
    http = rest(gateway, api_key)
    created = http.post(
        "/webhook-endpoints", json={"url": receiver.url, "events": ["fine_tuning.job.succeeded"]}
    )
    assert created.status_code == 200, created.text
    endpoint = created.json()
    assert endpoint["object"] == "webhook_endpoint" and endpoint["id"].startswith("we_")
    assert endpoint["url"] == receiver.url and endpoint["events"] == ["fine_tuning.job.succeeded"]
    assert endpoint["secret"].startswith("whsec_") and isinstance(endpoint["created_at"], int)
    listed = http.get("/webhook-endpoints").json()
    assert listed["object"] == "list" and [e["id"] for e in listed["data"]] == [endpoint["id"]]
    assert "secret" not in listed["data"][0]
    assert "secret" not in http.get(f"/webhook-endpoints/{endpoint['id']}").json()

    client = openai_client(
        gateway.base_url, api_key, max_retries=0, default_headers={"x-portkey-provider": "openai"}
    )
    training = client.files.create(file=write_training(tmp_path), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=training.id)
    (native,) = [j for j in fake.jobs.values() if (j.metadata or {}).get("tunegate_job_id") == job.id]
    for _ in range(10):  # the job's status moves when it is read (no monitor yet)
        fake.advance(native.id)
        if client.fine_tuning.jobs.retrieve(job.id).status == "succeeded":
            break
    assert client.fine_tuning.jobs.retrieve(job.id).status == "succeeded"

    deadline = time.monotonic() + 20
    while len(receiver.received) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    first, second = receiver.received  # 500, then 200: nothing more
    assert first.body == second.body and first.headers["webhook-id"] == second.headers["webhook-id"]

    sdk = openai.OpenAI(api_key="unused", base_url=gateway.base_url, webhook_secret=endpoint["secret"])
    event = sdk.webhooks.unwrap(second.body, second.headers)
    assert event.type == "fine_tuning.job.succeeded" and event.object == "event"
    assert event.data.id == job.id and event.id.startswith("evt_")
    assert sdk.webhooks.unwrap(first.body, first.headers).id == event.id  # the retry's id is the same
    with pytest.raises(openai.InvalidWebhookSignatureError):
        sdk.webhooks.unwrap(second.body.replace(job.id.encode(), b"ftjob-forged"), second.headers)

    time.sleep(0.5)  # reading the job again sends nothing more
    client.fine_tuning.jobs.retrieve(job.id)
    time.sleep(0.5)
    assert len(receiver.received) == 2

    deleted = http.delete(f"/webhook-endpoints/{endpoint['id']}")
    assert deleted.json() == {"object": "webhook_endpoint.deleted", "id": endpoint["id"], "deleted": True}
    assert http.get(f"/webhook-endpoints/{endpoint['id']}").status_code == 404


def test_another_owner_cannot_see_or_delete_an_endpoint(
    stack: tuple[Gateway, FakeOpenAI], receiver: Receiver, api_key: str
) -> None:
    gateway, _ = stack
    mine = rest(gateway, api_key)
    endpoint = mine.post("/webhook-endpoints", json={"url": receiver.url}).json()
    assert endpoint["events"] == [
        "fine_tuning.job.succeeded",
        "fine_tuning.job.failed",
        "fine_tuning.job.cancelled",
    ]
    theirs = rest(gateway, api_key + "-other")
    assert theirs.get("/webhook-endpoints").json()["data"] == []
    for answer in (
        theirs.get(f"/webhook-endpoints/{endpoint['id']}"),
        theirs.delete(f"/webhook-endpoints/{endpoint['id']}"),
    ):
        assert answer.status_code == 404
        assert answer.json()["error"]["code"] == "webhook_endpoint_not_found"
    assert mine.get(f"/webhook-endpoints/{endpoint['id']}").json()["id"] == endpoint["id"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"url": "http://10.0.0.1/x"}, "url"),
        ({"url": "https://10.0.0.1/x"}, "url"),
        ({"url": "https://169.254.169.254/latest"}, "url"),
        ({"url": "http://hooks.example.com/x"}, "url"),
        ({"url": "https://hooks.example.com/x", "events": ["batch.completed"]}, "events"),
    ],
)
def test_refused_registrations_name_the_parameter_and_store_nothing(
    stack: tuple[Gateway, FakeOpenAI], api_key: str, body: dict[str, object], param: str
) -> None:
    http = rest(stack[0], api_key)
    answer = http.post("/webhook-endpoints", json=body)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert http.get("/webhook-endpoints").json()["data"] == []
