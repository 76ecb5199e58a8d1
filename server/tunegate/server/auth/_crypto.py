"""Secrets at rest: envelope encryption under one master key, with `cryptography`'s AES-GCM.

Each sealed value has its own random 256-bit data key. The value is encrypted with the data key
(AES-256-GCM, a random 96-bit nonce, the caller's `aad` bound in — e.g. the owner and slug of a
virtual key, so a sealed secret copied onto another row does not open); the data key is encrypted
("wrapped") with the master key (AES-256-GCM, the same `aad`). A sealed value is one text:
`v1.<master key id>.<base64url(wrap nonce ‖ wrapped data key)>.<base64url(nonce ‖ ciphertext)>`.
`<master key id>` is the first 16 hex digits of SHA-256(master key): which master opens it.

Rotating the master key (`rewrap`) re-wraps the data keys only; the values' ciphertexts stay.

The master key (32 bytes) comes from `TUNEGATE_MASTER_KEY` (base64), else from a file (its
content, base64 — `[secrets] master_key_file`), else from `<data dir>/master.key`, created on
first use (mode 0600). Replicas sharing one database must share the master key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["MASTER_KEY_ENV", "MasterKey", "SealError", "load_master_key", "write_new_master_key"]

MASTER_KEY_ENV = "TUNEGATE_MASTER_KEY"
_VERSION = "v1"
_NONCE = 12


class SealError(Exception):
    """A sealed value that cannot be opened: another master key, tampering, or garbage."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class MasterKey:
    """The key that wraps every data key (never stored in the database, never logged)."""

    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.key) != 32:
            raise ValueError("the master key must be 32 bytes")

    @property
    def id(self) -> str:
        return hashlib.sha256(self.key).hexdigest()[:16]

    @classmethod
    def generate(cls) -> MasterKey:
        return cls(secrets.token_bytes(32))

    @classmethod
    def from_base64(cls, text: str) -> MasterKey:
        try:
            raw = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("the master key must be 32 bytes in base64") from None
        return cls(raw)

    def encoded(self) -> str:
        return base64.b64encode(self.key).decode("ascii")

    # -- sealing -------------------------------------------------------------------------------

    def seal(self, plaintext: bytes, aad: bytes) -> str:
        data_key = AESGCM.generate_key(bit_length=256)
        nonce, wrap_nonce = os.urandom(_NONCE), os.urandom(_NONCE)
        ciphertext = AESGCM(data_key).encrypt(nonce, plaintext, aad)
        wrapped = AESGCM(self.key).encrypt(wrap_nonce, data_key, aad)
        return ".".join((_VERSION, self.id, _b64(wrap_nonce + wrapped), _b64(nonce + ciphertext)))

    def _parts(self, sealed: str) -> tuple[bytes, bytes]:
        try:
            version, key_id, wrapped, body = sealed.split(".")
        except ValueError:
            raise SealError("not a sealed value") from None
        if version != _VERSION:
            raise SealError(f"unknown sealed value version {version!r}")
        if key_id != self.id:
            raise SealError(f"sealed under another master key ({key_id})")
        try:
            return _unb64(wrapped), _unb64(body)
        except (binascii.Error, ValueError):
            raise SealError("not a sealed value") from None

    def _data_key(self, wrapped: bytes, aad: bytes) -> bytes:
        try:
            return AESGCM(self.key).decrypt(wrapped[:_NONCE], wrapped[_NONCE:], aad)
        except InvalidTag:
            raise SealError("the data key does not open (tampered, or another row's)") from None

    def unseal(self, sealed: str, aad: bytes) -> bytes:
        wrapped, body = self._parts(sealed)
        data_key = self._data_key(wrapped, aad)
        try:
            return AESGCM(data_key).decrypt(body[:_NONCE], body[_NONCE:], aad)
        except InvalidTag:
            raise SealError("the value does not open (tampered)") from None

    def rewrap(self, sealed: str, aad: bytes, new: MasterKey) -> str:
        """`sealed` with its data key wrapped by `new` instead (the ciphertext is kept)."""
        wrapped, body = self._parts(sealed)
        data_key = self._data_key(wrapped, aad)
        wrap_nonce = os.urandom(_NONCE)
        rewrapped = AESGCM(new.key).encrypt(wrap_nonce, data_key, aad)
        return ".".join((_VERSION, new.id, _b64(wrap_nonce + rewrapped), _b64(body)))


def load_master_key(
    data_dir: Path, key_file: Path | None = None, environ: dict[str, str] | None = None
) -> MasterKey:
    """The master key: `TUNEGATE_MASTER_KEY`, else `key_file`, else `<data_dir>/master.key`
    (created, mode 0600, when missing). Raises `ValueError` for a malformed key."""
    env = os.environ if environ is None else environ
    text = env.get(MASTER_KEY_ENV, "").strip()
    if text:
        return MasterKey.from_base64(text)
    if key_file is not None:
        return MasterKey.from_base64(key_file.read_text())
    path = data_dir / "master.key"
    if path.exists():
        return MasterKey.from_base64(path.read_text())
    data_dir.mkdir(parents=True, exist_ok=True)
    return write_new_master_key(path)


def write_new_master_key(path: Path) -> MasterKey:
    """A fresh master key, written to `path` (created, mode 0600; an existing file is an error)."""
    key = MasterKey.generate()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(key.encoded() + "\n")
    return key
