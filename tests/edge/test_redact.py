"""Credential redaction at the logging layer (`tunegate.edge._redact`)."""

from __future__ import annotations

import logging

import pytest
from tunegate.edge import REDACTED, RedactingFilter, redact


@pytest.mark.parametrize(
    "text",
    [
        "Invalid header value char: b'Authorization: Bearer sk-SECRET-123\\x01'",
        "authorization: Basic SECRET-123",
        "{'api-key': 'SECRET-123', 'x-request-id': 'r'}",
        "X-Portkey-Api-Key: SECRET-123\r\nHost: x",
        "x-portkey-virtual-key=SECRET-123",
        "x-portkey-aws-secret-access-key: SECRET-123",
        "x-portkey-aws-session-token: SECRET-123",
        "x-portkey-vertex-service-account-json: {SECRET-123}",
        "calling with token sk-SECRET-123 now",
        "tenant pk-SECRET-123",
        "Bearer SECRET-123",
        "issued tgk_0123456789ab_SECRET-123 for acme",
    ],
)
def test_redact_masks_credentials(text: str) -> None:
    masked = redact(text)
    assert "SECRET-123" not in masked
    assert REDACTED in masked


@pytest.mark.parametrize("text", ["GET /v1/files 200", "x-portkey-provider: openai", "task-1 done"])
def test_redact_keeps_other_text(text: str) -> None:
    assert redact(text) == text


def test_filter_masks_args_and_exception_text() -> None:
    try:
        raise ValueError("bad header Authorization: Bearer sk-SECRET-123")
    except ValueError as exc:
        record = logging.LogRecord(
            "aiohttp.server", logging.ERROR, __file__, 1, "got %s", ("sk-SECRET-123",), (type(exc), exc, None)
        )
    assert RedactingFilter().filter(record)
    formatted = logging.Formatter().format(record)
    assert "SECRET-123" not in formatted and "ValueError" in formatted
