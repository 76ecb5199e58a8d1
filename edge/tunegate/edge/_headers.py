"""Which HTTP headers cross the edge, in each direction.

Sans-IO: header pairs in, metadata pairs out.

Request → gRPC metadata is an explicit allow-list (not grpc-gateway's prefix scheme): the
server must only ever see headers the contract knows. Names are lower-cased; values must be
printable ASCII (gRPC rejects anything else, and a ``-bin`` key would need base64), so other
values are dropped rather than mangled. Hop-by-hop headers and the reserved ``grpc-*`` names
are never forwarded whatever the list says. ``x-forwarded-for`` gets the peer appended.

Every call carries ``x-request-id``: the client's, when it is a sane token, else a fresh
``req_<hex>``; the edge echoes it on every response, errors included.

Server initial metadata → response headers is a second, shorter allow-list
(``content-disposition``, ``content-length`` — sent as ``x-content-length``, since gRPC drops a
``content-length`` metadata key — and ``retry-after``).
"""

from __future__ import annotations

import functools
import re
import secrets
from collections.abc import Iterable, Mapping

from tunegate.metadata import is_credential_key

__all__ = [
    "REQUEST_ID",
    "UnreadableCredential",
    "forward_metadata",
    "new_request_id",
    "request_id_from",
    "response_headers",
]

REQUEST_ID = "x-request-id"

_FORWARDED = frozenset(
    {"authorization", "api-key", "idempotency-key", "openai-organization", "openai-project", REQUEST_ID}
)
_FORWARDED_PREFIXES = ("x-portkey-",)
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade", "host", "content-length"}
)
_RESPONSE_HEADERS = ("content-disposition", "content-length", "retry-after")
# gRPC drops a `content-length` metadata key (HTTP/2 reserves it), so servers send this instead.
_CONTENT_LENGTH_ALIAS = "x-content-length"
_GRPC_KEY = re.compile(r"[0-9a-z_.-]+")
_PRINTABLE = re.compile(r"[\x20-\x7e]*")
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/+=-]{0,127}")


class UnreadableCredential(ValueError):
    """A credential header whose value is not printable ASCII: the call cannot be scoped, so it
    is refused (never run anonymously or under another credential). ``name`` is the header."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def new_request_id() -> str:
    """A fresh, unguessable request id: ``req_`` + 32 hex digits."""
    return f"req_{secrets.token_hex(16)}"


def request_id_from(headers: Mapping[str, str]) -> str:
    """The client's ``X-Request-Id`` when it is a short printable token, else a fresh one."""
    given = headers.get(REQUEST_ID, "").strip()
    return given if _SANE_REQUEST_ID.fullmatch(given) else new_request_id()


@functools.lru_cache(maxsize=512)  # a request carries a dozen names, the same ones again and again
def _forwardable(name: str) -> bool:
    if name in _HOP_BY_HOP or name.startswith(("grpc-", "proxy-")) or name.endswith("-bin"):
        return False
    if not _GRPC_KEY.fullmatch(name):
        return False
    return name in _FORWARDED or name.startswith(_FORWARDED_PREFIXES)


def forward_metadata(
    headers: Iterable[tuple[str, str]],
    *,
    request_id: str,
    peer: str | None = None,
) -> tuple[tuple[str, str], ...]:
    """gRPC metadata for a request with these headers (every ``(name, value)`` pair, repeats kept).

    ``x-request-id`` is always ``request_id`` (the client's value is replaced, not doubled).
    ``x-forwarded-for`` is the client's chain with ``peer`` appended. Other values that are not
    printable ASCII are dropped, except a credential's: raises `UnreadableCredential`.
    """
    metadata: list[tuple[str, str]] = []
    forwarded_for: list[str] = []
    for raw_name, raw_value in headers:
        name = raw_name.lower()
        value = raw_value.strip()
        if not _PRINTABLE.fullmatch(value):
            if is_credential_key(name):
                raise UnreadableCredential(name)
            continue
        if name == "x-forwarded-for":
            forwarded_for.extend(hop.strip() for hop in value.split(",") if hop.strip())
        elif name != REQUEST_ID and _forwardable(name):
            metadata.append((name, value))
    if peer and _PRINTABLE.fullmatch(peer):
        forwarded_for.append(peer)
    if forwarded_for:
        metadata.append(("x-forwarded-for", ", ".join(forwarded_for)))
    metadata.append((REQUEST_ID, request_id))
    return tuple(metadata)


def response_headers(metadata: Iterable[tuple[str, str | bytes]] | None) -> dict[str, str]:
    """The response headers to copy from a call's initial metadata (allow-listed, text only).

    ``x-content-length`` becomes ``content-length``: gRPC itself strips a ``content-length`` key.
    """
    out: dict[str, str] = {}
    for name, value in metadata or ():
        key = name.lower()
        if key == _CONTENT_LENGTH_ALIAS:
            key = "content-length"
        if key in _RESPONSE_HEADERS and isinstance(value, str) and _PRINTABLE.fullmatch(value):
            out[key] = value
    return out
