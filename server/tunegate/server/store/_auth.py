"""The `api_keys`, `virtual_keys` and `gateway_secrets` repository (rules live in
`tunegate.server.auth`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from tunegate.server.store._database import Engine
from tunegate.server.store._schema import api_keys, gateway_secrets, virtual_keys, webhook_endpoints

__all__ = ["ApiKeyRecord", "AuthRepository", "Duplicate", "VirtualKeyRecord"]


class Duplicate(Exception):
    """An insert whose primary key exists."""


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    id: str
    tenant: str
    name: str
    role: str
    hash: str
    created_at: int
    expires_at: int | None = None
    revoked_at: int | None = None


@dataclass(frozen=True, slots=True)
class VirtualKeyRecord:
    owner: str
    slug: str
    provider: str
    config: str
    secret: str
    created_at: int
    updated_at: int


class AuthRepository:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    # -- api keys ------------------------------------------------------------------------------

    async def insert_key(self, record: ApiKeyRecord) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(api_keys.insert().values(**asdict(record)))

    async def key(self, key_id: str) -> ApiKeyRecord | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(api_keys.select().where(api_keys.c.id == key_id))).first()
        return None if row is None else ApiKeyRecord(**row._asdict())

    async def keys(self, tenant: str | None) -> Sequence[ApiKeyRecord]:
        query = api_keys.select().order_by(api_keys.c.created_at, api_keys.c.id)
        if tenant is not None:
            query = query.where(api_keys.c.tenant == tenant)
        async with self._engine.connect() as conn:
            return [ApiKeyRecord(**row._asdict()) for row in await conn.execute(query)]

    async def has_admin(self) -> bool:
        query = sa.select(api_keys.c.id).where(api_keys.c.role == "admin", api_keys.c.revoked_at.is_(None))
        async with self._engine.connect() as conn:
            return (await conn.execute(query.limit(1))).first() is not None

    async def revoke_key(self, key_id: str, tenant: str | None, now: int) -> bool:
        query = api_keys.update().where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        if tenant is not None:
            query = query.where(api_keys.c.tenant == tenant)
        async with self._engine.begin() as conn:
            result = await conn.execute(query.values(revoked_at=now))
        return bool(result.rowcount)

    # -- virtual keys --------------------------------------------------------------------------

    async def insert_virtual_key(self, record: VirtualKeyRecord) -> None:
        try:
            async with self._engine.begin() as conn:
                await conn.execute(virtual_keys.insert().values(**asdict(record)))
        except IntegrityError as exc:
            raise Duplicate(record.slug) from exc

    async def virtual_key(self, owner: str, slug: str) -> VirtualKeyRecord | None:
        query = virtual_keys.select().where(virtual_keys.c.owner == owner, virtual_keys.c.slug == slug)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else VirtualKeyRecord(**row._asdict())

    async def virtual_keys(self, owner: str | None = None) -> Sequence[VirtualKeyRecord]:
        query = virtual_keys.select().order_by(virtual_keys.c.owner, virtual_keys.c.slug)
        if owner is not None:
            query = query.where(virtual_keys.c.owner == owner)
        async with self._engine.connect() as conn:
            return [VirtualKeyRecord(**row._asdict()) for row in await conn.execute(query)]

    async def virtual_keys_version(self) -> tuple[int, int]:
        """(row count, newest `updated_at`): replicas compare it to know when to reload."""
        query = sa.select(sa.func.count(), sa.func.max(virtual_keys.c.updated_at))
        async with self._engine.connect() as conn:
            count, newest = (await conn.execute(query)).one()
        return int(count or 0), int(newest or 0)

    async def update_virtual_key(self, record: VirtualKeyRecord) -> bool:
        values: dict[str, Any] = {
            "provider": record.provider,
            "config": record.config,
            "secret": record.secret,
            "updated_at": record.updated_at,
        }
        query = virtual_keys.update().where(
            virtual_keys.c.owner == record.owner, virtual_keys.c.slug == record.slug
        )
        async with self._engine.begin() as conn:
            result = await conn.execute(query.values(**values))
        return bool(result.rowcount)

    async def delete_virtual_key(self, owner: str, slug: str) -> bool:
        query = virtual_keys.delete().where(virtual_keys.c.owner == owner, virtual_keys.c.slug == slug)
        async with self._engine.begin() as conn:
            result = await conn.execute(query)
        return bool(result.rowcount)

    # -- gateway secrets -----------------------------------------------------------------------

    async def secret(self, name: str) -> str | None:
        query = sa.select(gateway_secrets.c.value).where(gateway_secrets.c.name == name)
        async with self._engine.connect() as conn:
            value = (await conn.execute(query)).scalar()
        return None if value is None else str(value)

    async def insert_secret(self, name: str, value: str) -> bool:
        """False when another process stored `name` first."""
        try:
            async with self._engine.begin() as conn:
                await conn.execute(gateway_secrets.insert().values(name=name, value=value))
        except IntegrityError:
            return False
        return True

    async def rewrap_all(
        self, secrets: dict[str, str], keys: dict[tuple[str, str], str], endpoints: dict[str, str]
    ) -> None:
        """Replaces every sealed value — gateway secrets, virtual keys' secrets, webhook
        endpoints' signing secrets — in one transaction (a master-key rotation)."""
        async with self._engine.begin() as conn:
            for endpoint_id, value in endpoints.items():
                endpoint = webhook_endpoints.c.id == endpoint_id
                await conn.execute(webhook_endpoints.update().where(endpoint).values(secret=value))
            for name, value in secrets.items():
                await conn.execute(
                    gateway_secrets.update().where(gateway_secrets.c.name == name).values(value=value)
                )
            for (owner, slug), value in keys.items():
                await conn.execute(
                    virtual_keys.update()
                    .where(virtual_keys.c.owner == owner, virtual_keys.c.slug == slug)
                    .values(secret=value)
                )
