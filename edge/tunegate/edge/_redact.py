"""Credential redaction at the logging layer.

Contract: `redact(text)` returns `text` with every credential masked as ``[REDACTED]``:

- the value of a credential header wherever a ``name: value`` / ``name=value`` pair appears
  (raw header lines, reprs of dicts and bytes): ``authorization``, ``api-key`` and every
  ``x-portkey-*-key`` / ``*-secret*`` / ``*-token`` / ``*-service-account-json`` (any case);
  the value runs to the end of the line, a quote or an escaped ``\\r``/``\\n``;
- bearer tokens anywhere: ``Bearer <token>`` and ``sk-…`` / ``pk-…`` keys;
- gateway keys anywhere: ``tgk_<id>_<secret>`` keeps its public ``tgk_<id>_`` part.

`RedactingFilter` applies it to a record's formatted message (args merged in), its exception
text and its stack text; it never drops a record. `install_redaction()` puts one on every
handler of the root logger (ours and the libraries' records — aiohttp's access and server logs,
httpx, grpc — all end there), so it runs after `logging.basicConfig`.
"""

from __future__ import annotations

import logging
import re

from tunegate.metadata import CREDENTIAL_KEY_PATTERN

__all__ = ["REDACTED", "RedactingFilter", "install_redaction", "redact"]

REDACTED = "[REDACTED]"

_HEADER_PAIR = re.compile(
    rf"(?i)\b({CREDENTIAL_KEY_PATTERN})(['\"]?\s*[:=]\s*b?['\"]?)((?:(?!\\r|\\n)[^'\"\r\n])+)"
)
_BEARER = re.compile(r"(?i)\b(bearer\s+)[^\s'\",;]+")
_KEY = re.compile(r"\b([sp]k-)[A-Za-z0-9_\-.]+")
_GATEWAY_KEY = re.compile(r"\b(tgk_[0-9a-f]{12}_)[A-Za-z0-9_-]+")


def redact(text: str) -> str:
    """`text` with credential header values, bearer tokens and ``sk-``/``pk-`` keys masked."""
    text = _HEADER_PAIR.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)
    text = _BEARER.sub(lambda m: m.group(1) + REDACTED, text)
    text = _GATEWAY_KEY.sub(lambda m: m.group(1) + REDACTED, text)
    return _KEY.sub(lambda m: m.group(1) + REDACTED, text)


class RedactingFilter(logging.Filter):
    """Masks credentials in a record's message, exception text and stack text (see `redact`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install_redaction(logger: logging.Logger | None = None) -> None:
    """Adds a `RedactingFilter` to every handler of `logger` (the root logger by default)."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
