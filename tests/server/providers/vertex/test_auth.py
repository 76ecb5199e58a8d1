"""Vertex credentials: key file parsing, and tokens minted by google-auth against a fake endpoint."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from tunegate.server.errors import InvalidArgument, TunegateError
from tunegate.server.providers.vertex._auth import (
    HEADER_SERVICE_ACCOUNT,
    AccessToken,
    Tokens,
    parse_service_account,
)

from tests.fakes.google_oauth import FakeGoogleOAuth


def key_file(token_uri: str, email: str = "tuner@proj-123456.iam.gserviceaccount.com") -> tuple[str, str]:
    """A service-account key file (JSON text) with a fresh RSA key, and its public key (PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    document = {
        "type": "service_account",
        "project_id": "proj-123456",
        "private_key_id": "abc123",
        "private_key": private,
        "client_email": email,
        "client_id": "1234567890",
        "token_uri": token_uri,
    }
    return json.dumps(document), public


@pytest.fixture
async def oauth() -> AsyncIterator[FakeGoogleOAuth]:
    fake = FakeGoogleOAuth()
    await fake.start()
    yield fake
    await fake.stop()
    assert fake.violations == []


def account(oauth: FakeGoogleOAuth, email: str = "tuner@proj-123456.iam.gserviceaccount.com") -> Any:
    raw, public = key_file(oauth.url, email)
    oauth.accounts[email] = public
    return parse_service_account(raw, token_uris={oauth.url})


async def test_token_is_fetched_once_and_cached(oauth: FakeGoogleOAuth) -> None:
    info = account(oauth)
    assert info.project_id == "proj-123456"
    assert "PRIVATE" not in repr(info)
    tokens = Tokens()
    first = await tokens.token(info)
    assert first == oauth.issued[0]
    assert await tokens.token(info) == first
    assert oauth.requests == 1 and tokens.refreshes(info) == 1


async def test_concurrent_callers_share_one_refresh(oauth: FakeGoogleOAuth) -> None:
    info = account(oauth)
    tokens = Tokens()
    got = await asyncio.gather(*(tokens.token(info) for _ in range(10)))
    assert len(set(got)) == 1
    assert oauth.requests == 1


async def test_expiring_token_is_refreshed(oauth: FakeGoogleOAuth) -> None:
    # google-auth treats a token as invalid within its refresh margin (minutes) of expiry:
    # an `expires_in` of 1 s is already expiring, so each call fetches a new one.
    oauth.expires_in = 1
    info = account(oauth)
    tokens = Tokens()
    first = await tokens.token(info)
    second = await tokens.token(info)
    assert first != second and oauth.requests == 2
    oauth.expires_in = 3600
    third = await tokens.token(info)
    assert await tokens.token(info) == third
    assert oauth.requests == 3


async def test_one_entry_per_key_file(oauth: FakeGoogleOAuth) -> None:
    a, b = (
        account(oauth, "a@p-123456.iam.gserviceaccount.com"),
        account(oauth, "b@p-123456.iam.gserviceaccount.com"),
    )
    assert a.fingerprint != b.fingerprint
    tokens = Tokens()
    assert await tokens.token(a) != await tokens.token(b)
    await tokens.token(a)
    assert oauth.requests == 2


async def test_refused_key_is_unauthenticated_naming_the_header(oauth: FakeGoogleOAuth) -> None:
    info = account(oauth)
    oauth.accounts[info.client_email] = key_file(oauth.url)[1]  # another key: bad signature
    with pytest.raises(TunegateError) as caught:
        await Tokens().token(info)
    assert caught.value.http_status is None and caught.value.code == "invalid_service_account"
    assert caught.value.param == HEADER_SERVICE_ACCOUNT
    assert caught.value.provider == "vertex-ai"
    oauth.violations.clear()


async def test_access_token_is_used_as_is() -> None:
    assert await Tokens().token(AccessToken("ya29.caller")) == "ya29.caller"
    assert "ya29" not in repr(AccessToken("ya29.caller"))
    with pytest.raises(InvalidArgument):
        AccessToken("two words")


GOOD, _ = key_file("https://oauth2.googleapis.com/token")


def test_default_token_uri_accepted() -> None:
    info = parse_service_account(GOOD)
    assert info.token_uri == "https://oauth2.googleapis.com/token"


def _with(**changes: Any) -> str:
    document = json.loads(GOOD)
    for k, v in changes.items():
        if v is None:
            del document[k]
        else:
            document[k] = v
    return json.dumps(document)


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('"a string"', "JSON object"),
        (_with(type="authorized_user"), "'type'"),
        (_with(client_email=None), "client_email"),
        (_with(private_key=None), "private_key"),
        (_with(token_uri=None), "token_uri"),
        (_with(private_key="-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n"), "PEM"),
        (_with(token_uri="http://169.254.169.254/token"), "token endpoint"),
    ],
)
def test_bad_key_files(raw: str, why: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_service_account(raw)
    assert caught.value.param == HEADER_SERVICE_ACCOUNT
    assert HEADER_SERVICE_ACCOUNT in caught.value.message and why in caught.value.message
    assert "BEGIN" not in caught.value.message
