"""Owner scope: which tenant a call acts for, derived from its credentials.

Rules, first match wins:

1. a non-empty `x-portkey-api-key` (a gateway key) scopes to `"tenant:" + sha256(key)[:32 hex]`
   — the tenant, whatever provider credentials the call carries. Portkey's SDK always sends
   this header, empty when no Portkey key is configured; an empty value is ignored;
2. AWS credentials (a Bedrock call) — `x-portkey-aws-secret-access-key` with
   `x-portkey-aws-access-key-id` — scope to `"aws:" + sha256(key id, secret)[:32 hex]`: such a
   call's `authorization` is whatever placeholder the OpenAI SDK was given, shared by unrelated
   callers. (Temporary credentials change with every session: send a gateway key to keep one
   scope across them.) Likewise a Vertex key file (`x-portkey-vertex-service-account-json`)
   scopes to `"gcp:" + sha256(key file)[:32 hex]`;
3. a provider credential — `authorization: Bearer <token>`, a bare `authorization: <token>`,
   or `api-key: <token>` — scopes to `"key:" + sha256(token)[:32 hex]` (the format existing
   rows carry, so it must not change);
4. otherwise the `"default"` scope.

Other `authorization` schemes (`Basic …`) are not credentials here. The first text value of
each metadata key counts. A credential that cannot be read — a value that is not printable
ASCII, or a binary `-bin` variant of a credential key — is an `InvalidArgument` naming the key,
never the anonymous scope (`check_credentials`). Secrets are never stored or logged, only these
fingerprints. Every stored row carries the scope and every read filters by it, so another owner's object is
indistinguishable from a missing one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from tunegate.metadata import is_credential_key, is_printable
from tunegate.server.errors import InvalidArgument

__all__ = [
    "DEFAULT_OWNER",
    "GATEWAY_KEY_HEADER",
    "check_credentials",
    "credential_from_authorization",
    "owner_from_metadata",
    "owner_from_tenant_key",
    "owner_from_token",
]

DEFAULT_OWNER = "default"
GATEWAY_KEY_HEADER = "x-portkey-api-key"
AWS_KEY_ID_HEADER = "x-portkey-aws-access-key-id"
AWS_SECRET_HEADER = "x-portkey-aws-secret-access-key"
VERTEX_KEY_FILE_HEADER = "x-portkey-vertex-service-account-json"


def check_credentials(metadata: Iterable[tuple[str, str | bytes]] | None) -> None:
    """Raises `InvalidArgument` (param = the key) for a credential that cannot be read: a value
    that is not printable ASCII, or a binary `<credential>-bin` key."""
    for raw_key, value in metadata or ():
        key = raw_key.lower()
        base = key.removesuffix("-bin")
        if not is_credential_key(base):
            continue
        if key != base or not isinstance(value, str) or not is_printable(value):
            raise InvalidArgument(
                f"The {base} header could not be read: credentials must be printable ASCII.",
                code="invalid_header",
                param=base,
            )


def _fingerprint(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()[:32]


def owner_from_token(token: str) -> str:
    """The scope of a provider credential: a truncated SHA-256 fingerprint."""
    return "key:" + _fingerprint(token)


def owner_from_tenant_key(key: str) -> str:
    """The scope of a gateway key (`x-portkey-api-key`): the tenant it identifies."""
    return "tenant:" + _fingerprint(key)


def credential_from_authorization(value: str) -> str | None:
    """The credential in an `authorization` value: `Bearer <token>` → token; a bare token (no
    spaces, as some clients send `Authorization: sk-…`) → itself; other schemes → None."""
    text = value.strip()
    if not text:
        return None
    scheme, _, rest = text.partition(" ")
    if not rest:
        return None if scheme.lower() == "bearer" else text  # `Bearer ` with an empty key
    if scheme.lower() == "bearer":
        return rest.strip() or None
    return None


def owner_from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The scope of a call, from its invocation metadata (keys are lower case on the wire).
    Raises `InvalidArgument` for an unreadable credential (`check_credentials`)."""
    check_credentials(metadata)
    first: dict[str, str] = {}
    for key, value in metadata or ():
        if isinstance(value, str):
            first.setdefault(key.lower(), value)
    gateway_key = first.get(GATEWAY_KEY_HEADER, "").strip()
    if gateway_key:
        return owner_from_tenant_key(gateway_key)
    aws_secret = first.get(AWS_SECRET_HEADER, "").strip()
    if aws_secret:
        return "aws:" + _fingerprint(f"{first.get(AWS_KEY_ID_HEADER, '').strip()}\n{aws_secret}")
    key_file = first.get(VERTEX_KEY_FILE_HEADER, "").strip()
    if key_file:
        return "gcp:" + _fingerprint(key_file)
    token = credential_from_authorization(first.get("authorization", ""))
    if token is None:
        token = first.get("api-key", "").strip() or None
    return DEFAULT_OWNER if token is None else owner_from_token(token)
