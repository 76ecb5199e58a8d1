"""Sealing secrets, gateway keys and stored virtual keys, over a real SQLite database."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from pathlib import Path

import pytest
from tunegate.server.auth import ApiKeys, Guard, MasterKey, SealError, StoredVirtualKeys, load_master_key
from tunegate.server.cli import main as cli_main
from tunegate.server.errors import InvalidArgument, PermissionDenied, Unauthenticated
from tunegate.server.store import Database, WebhookEndpointRecord


def test_seal_binds_the_value_to_its_row_and_master() -> None:
    master, other = MasterKey.generate(), MasterKey.generate()
    sealed = master.seal(b"sk-secret", b"virtual_keys:org:a:k")
    assert b"sk-secret" not in sealed.encode()
    assert master.unseal(sealed, b"virtual_keys:org:a:k") == b"sk-secret"
    with pytest.raises(SealError):
        master.unseal(sealed, b"virtual_keys:org:b:k")  # copied onto another row
    with pytest.raises(SealError):
        other.unseal(sealed, b"virtual_keys:org:a:k")
    version, key_id, wrapped, body = sealed.split(".")
    tampered = ".".join((version, key_id, wrapped, body[:-2] + ("AA" if body[-2:] != "AA" else "BB")))
    with pytest.raises(SealError):
        master.unseal(tampered, b"virtual_keys:org:a:k")
    rewrapped = master.rewrap(sealed, b"virtual_keys:org:a:k", other)
    assert rewrapped.split(".")[3] == body  # the ciphertext is kept
    assert other.unseal(rewrapped, b"virtual_keys:org:a:k") == b"sk-secret"


def test_master_key_sources(tmp_path: Path) -> None:
    made = load_master_key(tmp_path, environ={})
    assert (tmp_path / "master.key").stat().st_mode & 0o777 == 0o600
    assert load_master_key(tmp_path, environ={}) == made
    env = MasterKey.generate()
    assert load_master_key(tmp_path, environ={"TUNEGATE_MASTER_KEY": env.encoded()}) == env
    with pytest.raises(ValueError):
        load_master_key(tmp_path, environ={"TUNEGATE_MASTER_KEY": "c2hvcnQ="})


async def test_keys_authenticate_until_revoked_or_expired(tmp_path: Path) -> None:
    now = [1_000_000.0]
    database = await Database.open(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        keys = ApiKeys(database.auth, MasterKey.generate(), clock=lambda: now[0])
        issued = await keys.create(tenant="acme", name="ci", expires_at=1_000_100)
        principal = await keys.authenticate(issued.key)
        assert principal is not None and principal.owner == "org:acme" and principal.role == "tenant"
        record = await database.auth.key(issued.record.id)
        assert record is not None and issued.key.split("_", 2)[2] not in record.hash
        assert await keys.authenticate(issued.key[:-1] + ("A" if issued.key[-1] != "A" else "B")) is None
        now[0] = 1_000_100
        assert await keys.authenticate(issued.key) is None  # expired
        other = await keys.create(tenant="acme", name="cd")
        await keys.revoke(other.record.id)
        assert await keys.authenticate(other.key) is None
        with pytest.raises(InvalidArgument):
            await keys.create(tenant="Not A Tenant", name="x")
        guard = Guard(keys, "keys")
        with pytest.raises(Unauthenticated):
            await guard.admit("/tunegate.v1.Files/ListFiles", [])
        assert await guard.admit("/grpc.health.v1.Health/Check", []) is None
        admin = await keys.create(tenant="ops", name="root", role="admin")
        tenant = await keys.create(tenant="acme", name="app")
        with pytest.raises(PermissionDenied):
            await guard.admit("/tunegate.v1.ApiKeys/ListApiKeys", [("x-portkey-api-key", tenant.key)])
        found = await guard.admit(
            "/tunegate.v1.ApiKeys/ListApiKeys", [("authorization", f"Bearer {admin.key}")]
        )
        assert found is not None and found.role == "admin"
        # Open mode: no key is fine, a presented gateway key must still be a live one.
        open_guard = Guard(keys, "open")
        assert (
            await open_guard.admit("/tunegate.v1.Files/ListFiles", [("x-portkey-api-key", "legacy")]) is None
        )
        with pytest.raises(Unauthenticated):
            await open_guard.admit("/tunegate.v1.Files/ListFiles", [("x-portkey-api-key", other.key)])
    finally:
        await database.close()


async def test_rotating_the_master_key_keeps_every_secret_usable(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tunegate.db'}"
    master = load_master_key(tmp_path, environ={})
    database = await Database.open(url)
    try:
        stored = StoredVirtualKeys(database.auth, master)
        await stored.create("org:acme", slug="team", provider="openai", key="sk-rotate-me", options={})
        issued = await ApiKeys(database.auth, master).create(tenant="acme", name="ci")
        database.webhooks.sealer = master
        hook = WebhookEndpointRecord(
            id="we_rotate",
            owner="org:acme",
            url="https://h.example/x",
            events=(),
            secret="whsec_c2VjcmV0",
            created_at=1,
        )
        await database.webhooks.insert_endpoint(hook)
    finally:
        await database.close()
    out = io.StringIO()
    argv = ["keys", "--data-dir", str(tmp_path), "rotate-master", "--new-key-file", str(tmp_path / "new.key")]
    with contextlib.redirect_stdout(out):
        await asyncio.to_thread(cli_main, [*argv, "--generate"])  # the CLI runs its own event loop
    assert "re-wrapped 3 secrets" in out.getvalue()
    new = load_master_key(tmp_path, environ={})
    assert new != master
    database = await Database.open(url)
    try:
        stored = StoredVirtualKeys(database.auth, new)
        await stored.refresh()
        found = stored.for_account("svk:org:acme:team")
        assert found is not None and found[1] == "sk-rotate-me"
        assert await ApiKeys(database.auth, new).authenticate(issued.key) is not None
        with pytest.raises(SealError):
            StoredVirtualKeys(database.auth, master).unseal(await stored.get("org:acme", "team"))
        database.webhooks.sealer = new
        found_hook = await database.webhooks.get_endpoint("org:acme", "we_rotate")
        assert found_hook is not None and found_hook.secret == "whsec_c2VjcmV0"
    finally:
        await database.close()


async def test_stored_key_options_take_the_spellings_x_portkey_config_takes(tmp_path: Path) -> None:
    database = await Database.open(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        stored = StoredVirtualKeys(database.auth, MasterKey.generate())
        options = {"awsS3Bucket": "team-data", "awsAccessKeyId": "AKIAIOSFODNN7EXAMPLE"}
        options["awsRegion"] = "us-east-1"
        record = await stored.create("org:acme", slug="aws", provider="bedrock", key="s", options=options)
        assert json.loads(record.config) == {
            "aws_access_key_id": "AKIAIOSFODNN7EXAMPLE",
            "region": "us-east-1",
            "s3_bucket": "team-data",
        }
        with pytest.raises(InvalidArgument):
            await stored.create("org:acme", slug="bad", provider="bedrock", key="s", options={"colour": "x"})
    finally:
        await database.close()
