"""Standard Webhooks signing, as OpenAI signs its webhooks (sans-IO, pure).

A secret is `whsec_` + base64 of 32 random bytes; the HMAC key is the decoded bytes. A message
carries three headers: `webhook-id` (the same on every attempt), `webhook-timestamp` (integer
Unix seconds of this attempt) and `webhook-signature`, `v1,` + base64 of
HMAC-SHA256(key, f"{id}.{timestamp}.{body}") — what `openai`'s `client.webhooks.unwrap()`
and the `standardwebhooks` library verify.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

__all__ = ["SECRET_PREFIX", "new_secret", "sign", "signature_headers"]

SECRET_PREFIX = "whsec_"
_SECRET_BYTES = 32


def new_secret() -> str:
    """A fresh signing secret, `whsec_<base64 of 32 random bytes>`."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(_SECRET_BYTES)).decode()


def _key(secret: str) -> bytes:
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a webhook secret starts with whsec_")
    key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    if not key:
        raise ValueError("a webhook secret must not be empty")
    return key


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value of `body` sent as `webhook_id` at `timestamp`."""
    mac = hmac.new(_key(secret), f"{webhook_id}.{timestamp}.".encode(), hashlib.sha256)
    mac.update(body)
    return "v1," + base64.b64encode(mac.digest()).decode()


def signature_headers(secret: str, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt at sending `body`."""
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, webhook_id, timestamp, body),
    }
