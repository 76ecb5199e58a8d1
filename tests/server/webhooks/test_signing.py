"""Signing is Standard Webhooks as OpenAI does it: the official SDK's `unwrap()` accepts what
`signature_headers` signs, and rejects a tampered body, a forged signature and an old message."""

from __future__ import annotations

import base64
import time

import openai
import orjson
import pytest
from tunegate.server.store import event_id, job_event_payload
from tunegate.server.webhooks import new_secret, sign, signature_headers


@pytest.fixture
def secret() -> str:
    return new_secret()


def client(secret: str) -> openai.OpenAI:
    return openai.OpenAI(api_key="unused", base_url="http://127.0.0.1:9/v1", webhook_secret=secret)


def test_a_secret_is_whsec_and_32_random_bytes() -> None:
    first, second = new_secret(), new_secret()
    assert first.startswith("whsec_") and first != second
    assert len(base64.b64decode(first.removeprefix("whsec_"))) == 32


def test_unwrap_accepts_a_signed_fine_tuning_event(secret: str) -> None:
    body = job_event_payload("ftjob-abc", "fine_tuning.job.succeeded", 1_750_000_000).encode()
    headers = signature_headers(secret, "wh_1", int(time.time()), body)
    event = client(secret).webhooks.unwrap(body, headers)
    assert event.type == "fine_tuning.job.succeeded"
    assert event.id == event_id("ftjob-abc", "fine_tuning.job.succeeded") and event.id.startswith("evt_")
    assert event.object == "event" and event.created_at == 1_750_000_000
    assert event.data.id == "ftjob-abc"
    assert orjson.loads(body) == {
        "id": event.id,
        "object": "event",
        "created_at": 1_750_000_000,
        "type": "fine_tuning.job.succeeded",
        "data": {"id": "ftjob-abc"},
    }


@pytest.mark.parametrize("event_type", ["fine_tuning.job.failed", "fine_tuning.job.cancelled"])
def test_every_job_event_type_unwraps(secret: str, event_type: str) -> None:
    body = job_event_payload("ftjob-x", event_type, 1).encode()
    event = client(secret).webhooks.unwrap(body, signature_headers(secret, "wh_2", int(time.time()), body))
    assert event.type == event_type


def test_the_event_id_is_stable_per_job_and_type() -> None:
    one = event_id("ftjob-a", "fine_tuning.job.succeeded")
    assert one == event_id("ftjob-a", "fine_tuning.job.succeeded")
    assert one != event_id("ftjob-b", "fine_tuning.job.succeeded")
    assert one != event_id("ftjob-a", "fine_tuning.job.failed")


def test_a_tampered_body_is_rejected(secret: str) -> None:
    body = job_event_payload("ftjob-abc", "fine_tuning.job.succeeded", 1).encode()
    headers = signature_headers(secret, "wh_1", int(time.time()), body)
    with pytest.raises(openai.InvalidWebhookSignatureError):
        client(secret).webhooks.unwrap(body.replace(b"ftjob-abc", b"ftjob-abd"), headers)


def test_a_forged_or_foreign_signature_is_rejected(secret: str) -> None:
    body = job_event_payload("ftjob-abc", "fine_tuning.job.succeeded", 1).encode()
    now = int(time.time())
    headers = signature_headers(secret, "wh_1", now, body)
    forged = dict(headers, **{"webhook-signature": sign(new_secret(), "wh_1", now, body)})
    with pytest.raises(openai.InvalidWebhookSignatureError):
        client(secret).webhooks.unwrap(body, forged)
    other_id = dict(headers, **{"webhook-id": "wh_2"})  # the id is signed too
    with pytest.raises(openai.InvalidWebhookSignatureError):
        client(secret).webhooks.unwrap(body, other_id)
    with pytest.raises(openai.InvalidWebhookSignatureError):
        client(new_secret()).webhooks.unwrap(body, headers)


def test_an_old_message_is_rejected(secret: str) -> None:
    body = job_event_payload("ftjob-abc", "fine_tuning.job.succeeded", 1).encode()
    headers = signature_headers(secret, "wh_1", int(time.time()) - 600, body)
    with pytest.raises(openai.InvalidWebhookSignatureError, match="too old"):
        client(secret).webhooks.unwrap(body, headers)


def test_the_signature_matches_the_standard_webhooks_reference_vector() -> None:
    # The example of the Standard Webhooks specification (and of the `standardwebhooks` tests).
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == expected


def test_a_secret_without_its_prefix_is_refused() -> None:
    with pytest.raises(ValueError, match="whsec_"):
        sign("not-a-secret", "wh_1", 1, b"{}")
