"""Signed webhooks for fine-tuning jobs: endpoints per owner, OpenAI's event payloads, Standard
Webhooks signatures (`_signing`), the SSRF rules for target hosts (`_hosts`), and the background
sender with retries (`_sender`). Enqueuing happens in the store, in the transaction that writes a
job's terminal status (`tunegate.server.store._webhooks`)."""

from __future__ import annotations

from tunegate.server.webhooks._config import WebhookSettings
from tunegate.server.webhooks._hosts import HostPolicy, WebhookTarget, is_public_address
from tunegate.server.webhooks._sender import Resolver, WebhookSender
from tunegate.server.webhooks._service import ENDPOINT_PREFIX, EVENT_TYPES, WebhookService
from tunegate.server.webhooks._signing import SECRET_PREFIX, new_secret, sign, signature_headers

__all__ = [
    "ENDPOINT_PREFIX",
    "EVENT_TYPES",
    "SECRET_PREFIX",
    "HostPolicy",
    "Resolver",
    "WebhookSender",
    "WebhookService",
    "WebhookSettings",
    "WebhookTarget",
    "is_public_address",
    "new_secret",
    "sign",
    "signature_headers",
]
