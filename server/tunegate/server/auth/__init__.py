"""The gateway as a provider: its own API keys (`_keys`), virtual keys held at rest
(`_vkeys`), and the master key that seals their secrets (`_crypto`)."""

from __future__ import annotations

from tunegate.server.auth._crypto import (
    MASTER_KEY_ENV,
    MasterKey,
    SealError,
    load_master_key,
    write_new_master_key,
)
from tunegate.server.auth._keys import AUTH_MODES, ApiKeys, Guard, IssuedKey, Principal, current_principal
from tunegate.server.auth._rotation import rotate_master
from tunegate.server.auth._vkeys import StoredVirtualKeys, masked

__all__ = [
    "AUTH_MODES",
    "MASTER_KEY_ENV",
    "ApiKeys",
    "Guard",
    "IssuedKey",
    "MasterKey",
    "Principal",
    "SealError",
    "StoredVirtualKeys",
    "current_principal",
    "load_master_key",
    "masked",
    "rotate_master",
    "write_new_master_key",
]
