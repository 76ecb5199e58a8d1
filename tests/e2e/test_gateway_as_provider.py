"""The gateway as a provider, the whole way: a tenant holding only a gateway key stores a virtual
key, creates a job with the README's curl, and never polls — the monitor follows the job on the
spec-checking fake OpenAI to `succeeded` and the tenant's webhook endpoint receives the signed
event, which `openai`'s `client.webhooks.unwrap()` accepts (and a tampered copy it rejects)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from tunegate.server.routing import DEFAULT_PROVIDERS, RoutingConfig
from tunegate.server.webhooks import WebhookSettings

from tests.conftest import start_gateway
from tests.e2e.providers import TRAINING
from tests.e2e.test_gateway_keys import PROVIDER_KEY, issue
from tests.e2e.test_webhooks import ThreadedReceiver
from tests.fakes import start_fake_openai_in_thread


@pytest.fixture
def receiver() -> Iterator[ThreadedReceiver]:
    threaded = ThreadedReceiver([200])
    yield threaded
    threaded.close()


def test_a_job_succeeds_and_is_announced_with_no_client_polling(
    tmp_path: Path, receiver: ThreadedReceiver
) -> None:
    fake = start_fake_openai_in_thread(steps_per_get=1, api_keys={PROVIDER_KEY})  # each poll moves it on
    host = fake.base_url.removeprefix("http://").split("/")[0]
    key = issue(tmp_path, "acme", "ci")
    gateway = start_gateway(
        tmp_path,
        routing=RoutingConfig(providers=dict(DEFAULT_PROVIDERS), allowed_custom_hosts=(host,)),
        auth_mode="keys",
        monitor_enabled=True,
        monitor_min_interval_seconds=0.2,
        monitor_max_interval_seconds=0.4,
        monitor_tick_seconds=0.05,
        webhooks=WebhookSettings(allowed_hosts=("127.0.0.1",), poll_seconds=0.2),
    )
    try:
        http = httpx.Client(base_url=gateway.base_url, headers={"x-portkey-api-key": key}, timeout=30)
        vk = {
            "slug": "team",
            "provider": "openai",
            "key": PROVIDER_KEY,
            "options": {"custom_host": fake.base_url},
        }
        assert http.post("/virtual-keys", json=vk).status_code == 200
        hook = http.post("/webhook-endpoints", json={"url": receiver.receiver.url}).json()
        file_id = http.post(
            "/files", files={"file": ("t.jsonl", TRAINING)}, data={"purpose": "fine-tune"}
        ).json()["id"]
        created = http.post(
            "/fine_tuning/jobs",
            headers={"Content-Type": "application/json"},
            content=json.dumps(
                {
                    "model": "gpt-4o-mini-2024-07-18",
                    "suffix": "gw",
                    "training_file": file_id,
                    "portkey_options": {"x-portkey-virtual-key": "team"},
                    "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1}}},
                }
            ),
        ).json()
        assert created["id"].startswith("ftjob-"), created
        deadline = time.monotonic() + 60
        while not receiver.receiver.received:  # nobody reads the job meanwhile
            assert time.monotonic() < deadline, "no webhook arrived"
            time.sleep(0.1)
        delivery = receiver.receiver.received[0]
        sdk = openai.OpenAI(api_key="unused", base_url=gateway.base_url, webhook_secret=hook["secret"])
        event = sdk.webhooks.unwrap(delivery.body, delivery.headers)
        assert event.type == "fine_tuning.job.succeeded" and event.data.id == created["id"]
        with pytest.raises(openai.InvalidWebhookSignatureError):
            sdk.webhooks.unwrap(delivery.body.replace(b"succeeded", b"cancelled"), delivery.headers)
        job = http.get(f"/fine_tuning/jobs/{created['id']}").json()
        assert job["status"] == "succeeded" and job["fine_tuned_model"]
        events = http.get(f"/fine_tuning/jobs/{created['id']}/events", params={"limit": 100}).json()["data"]
        assert events and len({e["id"] for e in events}) == len(events)
        assert fake.violations == []
    finally:
        gateway.close()
        fake.close()
