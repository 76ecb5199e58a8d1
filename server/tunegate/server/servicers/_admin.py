"""`tunegate.v1.ApiKeys` and `tunegate.v1.VirtualKeys`: proto ⇄ `tunegate.server.auth`."""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format, struct_pb2
from tunegate.server.auth import ApiKeys, StoredVirtualKeys, masked
from tunegate.server.servicers._wire import Context, caller
from tunegate.server.store import ApiKeyRecord, VirtualKeyRecord
from tunegate.v1 import admin_pb2, admin_pb2_grpc

__all__ = ["ApiKeysServicer", "VirtualKeysServicer"]

_ROLES = {
    admin_pb2.API_KEY_ROLE_UNSPECIFIED: "tenant",
    admin_pb2.API_KEY_ROLE_TENANT: "tenant",
    admin_pb2.API_KEY_ROLE_ADMIN: "admin",
}


def _api_key(record: ApiKeyRecord, key: str | None = None) -> admin_pb2.ApiKey:
    message = admin_pb2.ApiKey(
        id=record.id,
        tenant=record.tenant,
        name=record.name,
        role=admin_pb2.API_KEY_ROLE_ADMIN if record.role == "admin" else admin_pb2.API_KEY_ROLE_TENANT,
        created_at=record.created_at,
    )
    if record.expires_at is not None:
        message.expires_at = record.expires_at
    if record.revoked_at is not None:
        message.revoked_at = record.revoked_at
    if key is not None:
        message.key = key
    return message


class ApiKeysServicer(admin_pb2_grpc.ApiKeysServicer):
    """Serves `/tunegate.v1.ApiKeys/*` (the guard lets only admin keys through)."""

    def __init__(self, keys: ApiKeys) -> None:
        self._keys = keys

    async def CreateApiKey(
        self, request: admin_pb2.CreateApiKeyRequest, context: Context
    ) -> admin_pb2.ApiKey:
        issued = await self._keys.create(
            tenant=request.tenant,
            name=request.name,
            role="admin" if _ROLES[request.role] == "admin" else "tenant",
            expires_at=request.expires_at if request.HasField("expires_at") else None,
        )
        return _api_key(issued.record, issued.key)

    async def ListApiKeys(
        self, request: admin_pb2.ListApiKeysRequest, context: Context
    ) -> admin_pb2.ListApiKeysResponse:
        records = await self._keys.list(request.tenant or None)
        return admin_pb2.ListApiKeysResponse(data=[_api_key(r) for r in records])

    async def RevokeApiKey(
        self, request: admin_pb2.RevokeApiKeyRequest, context: Context
    ) -> admin_pb2.ApiKey:
        return _api_key(await self._keys.revoke(request.id))


class VirtualKeysServicer(admin_pb2_grpc.VirtualKeysServicer):
    """Serves `/tunegate.v1.VirtualKeys/*`, each call within its caller's owner scope."""

    def __init__(self, store: StoredVirtualKeys) -> None:
        self._store = store

    def _message(self, record: VirtualKeyRecord) -> admin_pb2.VirtualKey:
        options = struct_pb2.Struct()
        options.update(json.loads(record.config))
        return admin_pb2.VirtualKey(
            slug=record.slug,
            provider=record.provider,
            options=options,
            key=masked(self._store.unseal(record)),
            created_at=record.created_at,
            updated_at=record.updated_at,
        )

    @staticmethod
    def _options(request: Any) -> dict[str, Any]:
        return json_format.MessageToDict(request.options) if request.HasField("options") else {}

    async def CreateVirtualKey(
        self, request: admin_pb2.CreateVirtualKeyRequest, context: Context
    ) -> admin_pb2.VirtualKey:
        record = await self._store.create(
            caller(context),
            slug=request.slug,
            provider=request.provider,
            key=request.key,
            options=self._options(request),
        )
        return self._message(record)

    async def ListVirtualKeys(
        self, request: admin_pb2.ListVirtualKeysRequest, context: Context
    ) -> admin_pb2.ListVirtualKeysResponse:
        return admin_pb2.ListVirtualKeysResponse(
            data=[self._message(r) for r in await self._store.list(caller(context))]
        )

    async def GetVirtualKey(
        self, request: admin_pb2.GetVirtualKeyRequest, context: Context
    ) -> admin_pb2.VirtualKey:
        return self._message(await self._store.get(caller(context), request.slug))

    async def UpdateVirtualKey(
        self, request: admin_pb2.UpdateVirtualKeyRequest, context: Context
    ) -> admin_pb2.VirtualKey:
        record = await self._store.update(
            caller(context),
            slug=request.slug,
            provider=request.provider,
            key=request.key,
            options=self._options(request),
        )
        return self._message(record)

    async def DeleteVirtualKey(
        self, request: admin_pb2.DeleteVirtualKeyRequest, context: Context
    ) -> admin_pb2.DeleteVirtualKeyResponse:
        await self._store.delete(caller(context), request.slug)
        return admin_pb2.DeleteVirtualKeyResponse(slug=request.slug, deleted=True)
