"""Gateway API keys: issued by the gateway, stored as keyed hashes, checked on every call.

A key is `tgk_<id>_<secret>`: `<id>` (12 hex digits) is its public part, by which it is found;
the whole key's HMAC-SHA256 under the gateway's hash key is what the database holds. The hash key
is a gateway secret sealed under the master key (`_crypto`), made on first use, so a stolen
database alone cannot confirm a guessed key. A key belongs to a tenant and has a role (`tenant`
or `admin`), an optional expiry, and can be revoked.

`Guard.admit` runs before every RPC (`tunegate.server.interceptor.wrap_handler`):

- a presented gateway key — `x-portkey-api-key`, or `Authorization: Bearer tgk_…` — must be a
  live issued key, else the call is 401 `invalid_api_key` (one message for unknown, revoked and
  expired keys: nothing tells which tenants or keys exist); the call then acts for its tenant
  (owner scope `org:<tenant>`);
- in `keys` mode, a call without one is 401 too (health and reflection excepted); a non-`tgk_`
  `x-portkey-api-key` is refused, and `Authorization: Bearer` is read as the gateway key when the
  call names no provider (`x-portkey-provider` / `x-portkey-config`);
- in `open` mode (the default), a call without an issued key keeps today's owner scope
  (`tunegate.server.owner`);
- the key-management RPCs need an admin key in both modes.

The principal of the running call is in a context variable (`current_principal`), which the
servicers' `caller()` reads.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from tunegate.server.auth._crypto import MasterKey
from tunegate.server.errors import InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from tunegate.server.owner import GATEWAY_KEY_HEADER, check_credentials, credential_from_authorization
from tunegate.server.routing import metadata_dict
from tunegate.server.store import ApiKeyRecord, AuthRepository

__all__ = [
    "ADMIN_METHOD_PREFIXES",
    "AUTH_MODES",
    "ApiKeys",
    "Guard",
    "IssuedKey",
    "Principal",
    "current_principal",
]

AUTH_MODES: Final = ("open", "keys")
Role = Literal["tenant", "admin"]
KEY_PREFIX: Final = "tgk_"
HASH_KEY_NAME: Final = "api_key_hash"
ADMIN_METHOD_PREFIXES: Final = ("/tunegate.v1.ApiKeys/",)
"""RPCs only an admin key may call."""
_EXEMPT: Final = ("/grpc.health.v1.Health/", "/grpc.reflection.")
_KEY = re.compile(r"tgk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
_TENANT = re.compile(r"[a-z0-9][a-z0-9_-]{0,47}")
_INVALID = "Incorrect API key provided. Issue a gateway key with `tunegate keys create`."

current_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "tunegate_principal", default=None
)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a call acts for: an issued key's tenant and role."""

    tenant: str
    role: Role
    key_id: str

    @property
    def owner(self) -> str:
        """The owner scope of everything the tenant stores."""
        return f"org:{self.tenant}"


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A key just created: `key` is shown once and never again."""

    record: ApiKeyRecord
    key: str


def gateway_secret_aad(name: str) -> bytes:
    """What a sealed gateway secret is bound to (its name)."""
    return f"gateway_secrets:{name}".encode()


def check_tenant(tenant: str) -> str:
    if not _TENANT.fullmatch(tenant):
        raise InvalidArgument(
            "A tenant is 1-48 lower-case letters, digits, '-' or '_', starting with a letter or digit.",
            code="invalid_value",
            param="tenant",
        )
    return tenant


class ApiKeys:
    """Issues, lists, revokes and checks gateway keys."""

    def __init__(
        self, repo: AuthRepository, master: MasterKey, clock: Callable[[], float] = time.time
    ) -> None:
        self._repo = repo
        self._master = master
        self._clock = clock
        self._hash_key: bytes | None = None

    async def _key(self) -> bytes:
        if self._hash_key is None:
            aad = gateway_secret_aad(HASH_KEY_NAME)
            sealed = await self._repo.secret(HASH_KEY_NAME)
            if sealed is None:
                await self._repo.insert_secret(HASH_KEY_NAME, self._master.seal(secrets.token_bytes(32), aad))
                sealed = await self._repo.secret(HASH_KEY_NAME)  # ours, or a racing replica's
                assert sealed is not None
            self._hash_key = self._master.unseal(sealed, aad)
        return self._hash_key

    async def _hash(self, key: str) -> str:
        return hmac.new(await self._key(), key.encode("ascii"), hashlib.sha256).hexdigest()

    async def create(
        self, *, tenant: str, name: str, role: Role = "tenant", expires_at: int | None = None
    ) -> IssuedKey:
        check_tenant(tenant)
        if not 0 < len(name) <= 128:
            raise InvalidArgument("A key's name is 1-128 characters.", code="invalid_value", param="name")
        now = int(self._clock())
        if expires_at is not None and expires_at <= now:
            raise InvalidArgument(
                "expires_at must be in the future.", code="invalid_value", param="expires_at"
            )
        key_id = secrets.token_hex(6)
        key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        record = ApiKeyRecord(
            id=key_id,
            tenant=tenant,
            name=name,
            role=role,
            hash=await self._hash(key),
            created_at=now,
            expires_at=expires_at,
        )
        await self._repo.insert_key(record)
        return IssuedKey(record, key)

    async def register(self, key: str, *, tenant: str, name: str, role: Role) -> bool:
        """Stores a key chosen outside (the bootstrap admin key from the environment) unless its
        id is known already. `ValueError` for a key not of the `tgk_…` form."""
        match = _KEY.fullmatch(key)
        if match is None:
            raise ValueError("a gateway key looks like tgk_<12 hex digits>_<43 base64url characters>")
        if await self._repo.key(match.group(1)) is not None:
            return False
        record = ApiKeyRecord(
            id=match.group(1),
            tenant=check_tenant(tenant),
            name=name,
            role=role,
            hash=await self._hash(key),
            created_at=int(self._clock()),
        )
        await self._repo.insert_key(record)
        return True

    async def list(self, tenant: str | None = None) -> list[ApiKeyRecord]:
        return list(await self._repo.keys(tenant))

    async def revoke(self, key_id: str, tenant: str | None = None) -> ApiKeyRecord:
        if not await self._repo.revoke_key(key_id, tenant, int(self._clock())):
            raise NotFound(f"No live API key {key_id!r}.", code="api_key_not_found", param="id")
        record = await self._repo.key(key_id)
        assert record is not None
        return record

    async def authenticate(self, key: str) -> Principal | None:
        """The principal of a live key, or None (unknown, revoked, expired or malformed)."""
        match = _KEY.fullmatch(key)
        if match is None:
            return None
        record = await self._repo.key(match.group(1))
        if record is None or not hmac.compare_digest(record.hash, await self._hash(key)):
            return None
        now = int(self._clock())
        if record.revoked_at is not None or (record.expires_at is not None and record.expires_at <= now):
            return None
        role: Role = "admin" if record.role == "admin" else "tenant"
        return Principal(tenant=record.tenant, role=role, key_id=record.id)


def presented_key(metadata: Mapping[str, str], mode: str) -> str | None:
    """The gateway key a call presents (see the module docstring), or None."""
    key = metadata.get(GATEWAY_KEY_HEADER, "").strip()
    if key:
        return key if key.startswith(KEY_PREFIX) or mode == "keys" else None
    bearer = credential_from_authorization(metadata.get("authorization", ""))
    if bearer is None:
        return None
    if bearer.startswith(KEY_PREFIX):
        return bearer
    names_provider = (
        metadata.get("x-portkey-provider", "").strip() or metadata.get("x-portkey-config", "").strip()
    )
    return bearer if mode == "keys" and not names_provider else None


class Guard:
    """Authenticates each call before its servicer runs (see the module docstring)."""

    def __init__(self, keys: ApiKeys, mode: str = "open") -> None:
        if mode not in AUTH_MODES:
            raise ValueError(f"auth mode must be one of {', '.join(AUTH_MODES)}, got {mode!r}")
        self.keys = keys
        self.mode = mode

    async def admit(self, method: str, metadata: Any) -> Principal | None:
        """The call's principal (also set as `current_principal`); raises `Unauthenticated` /
        `PermissionDenied`."""
        current_principal.set(None)
        if method.startswith(_EXEMPT):
            return None
        check_credentials(metadata)  # an unreadable credential is a 400 naming it, before all else
        presented = presented_key(metadata_dict(metadata), self.mode)
        principal = None if presented is None else await self.keys.authenticate(presented)
        if principal is None and (presented is not None or self.mode == "keys"):
            raise Unauthenticated(_INVALID, code="invalid_api_key")
        if method.startswith(ADMIN_METHOD_PREFIXES) and (principal is None or principal.role != "admin"):
            raise PermissionDenied("This call needs an admin gateway key.", code="admin_key_required")
        current_principal.set(principal)
        return principal
