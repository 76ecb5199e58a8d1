"""The call metadata keys the contract gives a meaning to, for the edge, the server and clients.

* Credentials: `is_credential_key` says which keys (HTTP header names, lower case) carry a
  secret — ``authorization``, ``api-key`` and every ``x-portkey-*-key`` / ``*-secret*`` /
  ``*-token`` / ``*-service-account-json``. Such a value is never logged, and one that cannot be
  read (not printable ASCII) refuses the call rather than run it without that credential.
  `CREDENTIAL_KEY_PATTERN` is the same rule as a regular expression, for redacting log text.
* `ACCEPTED_KEY`: the initial-metadata key a client-streaming call (an upload) sends once the
  checks that need no body have passed; a client may wait for it before sending the body.
"""

from __future__ import annotations

import re

__all__ = ["ACCEPTED_KEY", "CREDENTIAL_KEY_PATTERN", "is_credential_key", "is_printable"]

CREDENTIAL_KEY_PATTERN = (
    r"authorization|api-key|"
    r"x-portkey-[a-z0-9_.-]*?(?:-key|-secret[a-z0-9_.-]*|-token|-service-account-json)"
)
"""Credential keys as a regular expression (lower case; match it case-insensitively in text)."""

ACCEPTED_KEY = "x-tunegate-accepted"

_CREDENTIAL_KEY = re.compile(CREDENTIAL_KEY_PATTERN)
_PRINTABLE = re.compile(r"[\x20-\x7e]*")


def is_credential_key(name: str) -> bool:
    """Whether the metadata key or header ``name`` (lower case) carries a credential."""
    return _CREDENTIAL_KEY.fullmatch(name) is not None


def is_printable(value: str) -> bool:
    """Whether ``value`` is printable ASCII — what a metadata value may hold."""
    return _PRINTABLE.fullmatch(value) is not None
