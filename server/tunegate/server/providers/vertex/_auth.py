"""Google credentials for the Vertex AI provider: the caller's key file, and cached access tokens.

A call carries either a service-account key file (Portkey's
`x-portkey-vertex-service-account-json`, parsed and checked by `parse_service_account`) or an
OAuth access token (`Authorization: Bearer`, kept as an `AccessToken`). `Tokens` mints access
tokens for key files with google-auth (`service_account.Credentials`, the cloud-platform scope):
one credentials object per key file, keyed by the file's fingerprint, refreshed only when
`not creds.valid` (never fetched, or expiring), one refresh at a time per key file. google-auth
signs the JWT and speaks OAuth; its synchronous `requests` transport runs in a worker thread,
because its aiohttp transport is marked experimental and subclasses `aiohttp.ClientSession`, which
aiohttp deprecates.

The token endpoint is the key file's `token_uri`, a URL the caller chose: only the allowed
endpoints (Google's by default) are accepted, or a key file would make the gateway post to any
host.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections import OrderedDict
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests
from google.auth import exceptions as auth_exceptions
from google.auth.transport.requests import Request
from google.oauth2 import service_account
from tunegate.server.errors import (
    InvalidArgument,
    ProviderUnreachable,
    TunegateError,
    Unauthenticated,
    UpstreamError,
)

__all__ = [
    "DEFAULT_TOKEN_URIS",
    "HEADER_SERVICE_ACCOUNT",
    "SCOPE",
    "AccessToken",
    "ServiceAccountInfo",
    "Tokens",
    "parse_service_account",
]

PROVIDER = "vertex-ai"
_log = logging.getLogger(__name__)

HEADER_SERVICE_ACCOUNT = "x-portkey-vertex-service-account-json"
SCOPE = "https://www.googleapis.com/auth/cloud-platform"
DEFAULT_TOKEN_URIS = frozenset({"https://oauth2.googleapis.com/token"})
"""The token endpoints a key file may name (Google's, as written in every key file it issues)."""

_REQUIRED = ("client_email", "private_key", "token_uri")


@dataclass(frozen=True)
class ServiceAccountInfo:
    """A parsed service-account key file. `fingerprint` (SHA-256 of the canonical file) names it
    in caches and logs; the key itself is never in `repr`."""

    client_email: str
    token_uri: str
    project_id: str | None
    fingerprint: str
    document: Mapping[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class AccessToken:
    """An OAuth access token the caller sent (`Authorization: Bearer`): used as is, never
    refreshed. The token is not in `repr`."""

    token: str = field(repr=False)

    def __post_init__(self) -> None:
        if not self.token or any(c.isspace() for c in self.token):
            raise InvalidArgument("The Vertex AI access token is empty or malformed.", param="authorization")


def _invalid(param: str, why: str) -> InvalidArgument:
    return InvalidArgument(
        f"'{param}' is not a usable service account key file: {why}.",
        code="invalid_service_account",
        param=param,
    )


def parse_service_account(
    raw: str,
    *,
    param: str = HEADER_SERVICE_ACCOUNT,
    token_uris: Collection[str] = DEFAULT_TOKEN_URIS,
) -> ServiceAccountInfo:
    """The key file in `raw` (its JSON text), checked: a JSON object of `type`
    ``service_account`` with `client_email`, `private_key` (a PEM key google-auth can load) and a
    `token_uri` among `token_uris`. Anything else is an `InvalidArgument` naming `param`, whose
    message never quotes the file."""
    try:
        document = json.loads(raw)
    except ValueError:
        raise _invalid(param, "not valid JSON") from None
    if not isinstance(document, dict):
        raise _invalid(param, "expected a JSON object")
    kind = document.get("type", "service_account")
    if kind != "service_account":
        shown = kind if isinstance(kind, str) and len(kind) <= 40 else "?"
        raise _invalid(param, f"'type' is {shown!r}, expected 'service_account'")
    missing = [k for k in _REQUIRED if not isinstance(document.get(k), str) or not document[k].strip()]
    if missing:
        raise _invalid(param, f"missing {', '.join(missing)}")
    token_uri = document["token_uri"]
    if token_uri not in token_uris:
        raise _invalid(param, "its 'token_uri' is not an allowed token endpoint")
    try:
        service_account.Credentials.from_service_account_info(document, scopes=[SCOPE])  # type: ignore[no-untyped-call]
    except (ValueError, TypeError, IndexError):
        # google-auth's messages may quote the key: none of it is passed on.
        raise _invalid(param, "its 'private_key' is not a PEM private key") from None
    project = document.get("project_id")
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    return ServiceAccountInfo(
        client_email=document["client_email"],
        token_uri=token_uri,
        project_id=project if isinstance(project, str) and project else None,
        fingerprint=hashlib.sha256(canonical).hexdigest(),
        document=document,
    )


@dataclass
class _Entry:
    credentials: service_account.Credentials
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    refreshes: int = 0


class Tokens:
    """Access tokens for key files, cached per key file (at most `max_entries`, least recently
    used dropped first) and refreshed only when google-auth says the token is not valid."""

    def __init__(self, *, max_entries: int = 1024, param: str = HEADER_SERVICE_ACCOUNT) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._max_entries = max_entries
        self._param = param

    def refreshes(self, info: ServiceAccountInfo) -> int:
        """How many times the token of `info` was fetched (0 when it is not cached)."""
        entry = self._entries.get(info.fingerprint)
        return entry.refreshes if entry else 0

    def _entry(self, info: ServiceAccountInfo) -> _Entry:
        entry = self._entries.get(info.fingerprint)
        if entry is None:
            creds = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
                info.document, scopes=[SCOPE]
            )
            entry = self._entries[info.fingerprint] = _Entry(creds)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(info.fingerprint)
        return entry

    async def token(self, credential: ServiceAccountInfo | AccessToken) -> str:
        """A valid access token for `credential`: the caller's own `AccessToken` as is, or the
        cached token of a key file, fetched from its `token_uri` first when it is missing or
        expiring. Concurrent calls for one key file share one fetch."""
        if isinstance(credential, AccessToken):
            return credential.token
        entry = self._entry(credential)
        if not entry.credentials.valid:
            async with entry.lock:
                if not entry.credentials.valid:
                    await self._refresh(credential, entry)
        token = entry.credentials.token
        assert isinstance(token, str)
        return token

    async def _refresh(self, info: ServiceAccountInfo, entry: _Entry) -> None:
        _log.debug("fetching an access token for %s (key %s)", info.client_email, info.fingerprint[:12])
        try:
            await asyncio.to_thread(_refresh_blocking, entry.credentials)
        except auth_exceptions.GoogleAuthError as exc:
            raise self._error(info, exc) from None
        entry.refreshes += 1

    def _error(self, info: ServiceAccountInfo, exc: auth_exceptions.GoogleAuthError) -> TunegateError:
        err: TunegateError
        if isinstance(exc, auth_exceptions.TransportError):
            err = ProviderUnreachable(f"Google's token endpoint could not be reached: {exc}")
        elif isinstance(exc, auth_exceptions.RefreshError) and getattr(exc, "retryable", False):
            err = UpstreamError(f"Google's token endpoint failed: {_first(exc)}")
        else:
            err = Unauthenticated(
                f"Google refused the service account {info.client_email}: {_first(exc)}",
                code="invalid_service_account",
                param=self._param,
            )
        err.provider = PROVIDER
        return err


def _first(exc: BaseException) -> str:
    """google-auth's message without the raw response it appends."""
    return str(exc.args[0]) if exc.args else type(exc).__name__


def _refresh_blocking(credentials: service_account.Credentials) -> None:
    with requests.Session() as session:
        credentials.refresh(Request(session=session))  # type: ignore[no-untyped-call]
