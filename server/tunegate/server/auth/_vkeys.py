"""Virtual keys held by the gateway: per owner scope, the credential sealed at rest.

A stored virtual key is what a `[virtual_keys.<name>]` table of the configuration is — a
provider, its route (`region`, `custom_host`, provider options) and a credential — created
through the admin API by a tenant for itself. The credential is sealed under the master key
(`_crypto`, bound to the owner and slug) and opened only for a call that uses the key; it is
never returned (a mask of its last 4 characters is) and never logged.

Routing is synchronous (`tunegate.server.routing.Router`), so the rows live in memory as they are
in the database — sealed — and the router asks `for_call` / `for_account`. This process's own
changes update the map at once; other replicas' changes arrive through `refresh` (run every few
seconds by the server), which reloads when the newest `updated_at` moved. A name a tenant stores
shadows a configured virtual key of the same name for that tenant only.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from tunegate.server.auth._crypto import MasterKey
from tunegate.server.auth._keys import current_principal
from tunegate.server.errors import InvalidArgument, NotFound
from tunegate.server.owner import owner_from_metadata
from tunegate.server.routing import STORED_KEY_PREFIX, Router, VirtualKey, canonical_provider, normalise_key
from tunegate.server.store import AuthRepository, Duplicate, VirtualKeyRecord

__all__ = ["StoredVirtualKeys", "masked"]

_SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_ROUTE_KEYS = frozenset({"region", "custom_host", "base_url"})


def masked(secret: str) -> str:
    """What the API shows of a credential: its last 4 characters."""
    return "****" + secret[-4:] if len(secret) > 8 else "****"


def secret_aad(owner: str, slug: str) -> bytes:
    """What a stored virtual key's secret is bound to (its owner and slug)."""
    return f"virtual_keys:{owner}:{slug}".encode()


def _virtual_key(slug: str, provider: str, config: Mapping[str, Any]) -> VirtualKey:
    options = {k: v for k, v in config.items() if k not in _ROUTE_KEYS}
    base_url = config.get("custom_host") or config.get("base_url")
    return VirtualKey(
        name=slug,
        provider=provider,
        api_key_env=None,
        base_url=base_url,
        region=config.get("region"),
        options=options,
        stored=True,
    )


class StoredVirtualKeys:
    """The stored virtual keys (see the module docstring); `StoredKeys` for the router."""

    def __init__(
        self, repo: AuthRepository, master: MasterKey, clock: Callable[[], float] = time.time
    ) -> None:
        self._repo = repo
        self._master = master
        self._clock = clock
        self._rows: dict[tuple[str, str], VirtualKeyRecord] = {}
        self._seen: tuple[int, int] | None = None
        self.router: Router | None = None
        """Checks a new key's route as a call would (custom host allow-list, provider names)."""

    async def refresh(self) -> None:
        """Reloads every row when the table changed since the last load (its row count or newest
        `updated_at` moved)."""
        version = await self._repo.virtual_keys_version()
        if version == self._seen:
            return
        rows = await self._repo.virtual_keys()
        self._rows = {(row.owner, row.slug): row for row in rows}
        self._seen = version

    # -- the router's side ---------------------------------------------------------------------

    def _open(self, row: VirtualKeyRecord) -> tuple[VirtualKey, str]:
        key = _virtual_key(row.slug, row.provider, json.loads(row.config))
        return key, self._master.unseal(row.secret, secret_aad(row.owner, row.slug)).decode("utf-8")

    def for_call(self, metadata: Mapping[str, str], slug: str) -> tuple[VirtualKey, str, str] | None:
        principal = current_principal.get()
        owner = principal.owner if principal is not None else owner_from_metadata(metadata.items())
        row = self._rows.get((owner, slug))
        if row is None:
            return None
        key, secret = self._open(row)
        return key, secret, f"{STORED_KEY_PREFIX}{owner}:{slug}"

    def for_account(self, account_key: str) -> tuple[VirtualKey, str] | None:
        owner, _, slug = account_key.removeprefix(STORED_KEY_PREFIX).rpartition(":")
        row = self._rows.get((owner, slug))
        return None if row is None else self._open(row)

    # -- the admin API's side ------------------------------------------------------------------

    def _checked(
        self, slug: str, provider: str, key: str, options: Mapping[str, Any] | None
    ) -> tuple[str, str]:
        if not _SLUG.fullmatch(slug):
            raise InvalidArgument(
                "A virtual key's slug is 1-64 letters, digits, '.', '_' or '-'.",
                code="invalid_value",
                param="slug",
            )
        name = canonical_provider(provider or "")
        config: dict[str, Any] = {}
        for raw, value in (options or {}).items():
            field = normalise_key(str(raw))  # the spellings x-portkey-config takes
            if not isinstance(value, str):
                raise InvalidArgument(
                    f"options.{raw} must be a string.", code="invalid_value", param=f"options.{raw}"
                )
            config[field] = value
        try:
            virtual = _virtual_key(slug, name, config)
        except ValueError as exc:
            raise InvalidArgument(str(exc), code="invalid_value", param="options") from None
        if self.router is not None:
            if virtual.provider not in self.router.config.provider_names:
                known = ", ".join(sorted(self.router.config.provider_names))
                raise InvalidArgument(
                    f"Unknown provider {provider!r}; this gateway routes to: {known}.",
                    code="unknown_provider",
                    param="provider",
                )
            if virtual.base_url is not None:
                self.router.check_custom_host(virtual.base_url, "options.custom_host")
        if not key.strip() and virtual.provider != "local":
            raise InvalidArgument(
                "A virtual key needs its credential ('key').", code="invalid_value", param="key"
            )
        return virtual.provider, json.dumps(config, sort_keys=True)

    async def create(
        self, owner: str, *, slug: str, provider: str, key: str, options: Mapping[str, Any] | None
    ) -> VirtualKeyRecord:
        name, config = self._checked(slug, provider, key, options)
        now = int(self._clock())
        record = VirtualKeyRecord(
            owner=owner,
            slug=slug,
            provider=name,
            config=config,
            secret=self._master.seal(key.strip().encode("utf-8"), secret_aad(owner, slug)),
            created_at=now,
            updated_at=now,
        )
        try:
            await self._repo.insert_virtual_key(record)
        except Duplicate:
            raise InvalidArgument(
                f"A virtual key {slug!r} exists already; update it with PUT.",
                code="virtual_key_exists",
                param="slug",
            ) from None
        self._rows[(owner, slug)] = record
        return record

    async def get(self, owner: str, slug: str) -> VirtualKeyRecord:
        record = await self._repo.virtual_key(owner, slug)
        if record is None:
            raise NotFound(f"No virtual key {slug!r}.", code="virtual_key_not_found", param="slug")
        return record

    async def list(self, owner: str) -> list[VirtualKeyRecord]:
        return list(await self._repo.virtual_keys(owner))

    async def update(
        self, owner: str, *, slug: str, provider: str, key: str, options: Mapping[str, Any] | None
    ) -> VirtualKeyRecord:
        current = await self.get(owner, slug)
        secret = key.strip() or self.unseal(current)
        name, config = self._checked(slug, provider or current.provider, secret, options)
        record = VirtualKeyRecord(
            owner=owner,
            slug=slug,
            provider=name,
            config=config,
            secret=self._master.seal(secret.encode("utf-8"), secret_aad(owner, slug)),
            created_at=current.created_at,
            updated_at=max(int(self._clock()), current.updated_at + 1),
        )
        if not await self._repo.update_virtual_key(record):
            raise NotFound(f"No virtual key {slug!r}.", code="virtual_key_not_found", param="slug")
        self._rows[(owner, slug)] = record
        return record

    async def delete(self, owner: str, slug: str) -> None:
        if not await self._repo.delete_virtual_key(owner, slug):
            raise NotFound(f"No virtual key {slug!r}.", code="virtual_key_not_found", param="slug")
        self._rows.pop((owner, slug), None)

    def unseal(self, record: VirtualKeyRecord) -> str:
        return self._master.unseal(record.secret, secret_aad(record.owner, record.slug)).decode("utf-8")
