"""Rotating the master key: every sealed value re-wrapped under a new one, in one transaction."""

from __future__ import annotations

from tunegate.server.auth._crypto import MasterKey
from tunegate.server.auth._keys import HASH_KEY_NAME, gateway_secret_aad
from tunegate.server.auth._vkeys import secret_aad
from tunegate.server.store import Database
from tunegate.server.store._webhooks import seal, unseal

__all__ = ["rotate_master"]


async def rotate_master(database: Database, old: MasterKey, new: MasterKey) -> int:
    """Re-wraps every sealed value from `old` to `new` — the API-key hash secret and stored
    virtual keys' secrets (their data keys re-wrapped, the ciphertexts kept), webhook signing
    secrets (sealed again) — written in one transaction; returns how many. Raises `SealError`
    (nothing written) for a value `old` cannot open."""
    secrets: dict[str, str] = {}
    hashed = await database.auth.secret(HASH_KEY_NAME)
    if hashed is not None:
        secrets[HASH_KEY_NAME] = old.rewrap(hashed, gateway_secret_aad(HASH_KEY_NAME), new)
    keys = {
        (row.owner, row.slug): old.rewrap(row.secret, secret_aad(row.owner, row.slug), new)
        for row in await database.auth.virtual_keys()
    }
    endpoints = {  # sealed afresh: a secret stored before sealing was wired in is sealed now
        endpoint_id: seal(new, endpoint_id, unseal(old, endpoint_id, stored))
        for endpoint_id, stored in (await database.webhooks.stored_secrets()).items()
    }
    await database.auth.rewrap_all(secrets, keys, endpoints)
    return len(secrets) + len(keys) + len(endpoints)
