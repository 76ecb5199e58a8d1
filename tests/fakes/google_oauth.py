"""A fake Google OAuth 2.0 token endpoint for service-account credentials (the JWT-bearer grant).

It accepts `POST /token` with `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` and an
`assertion`, verifies the assertion's RS256 signature with the public key of the service account
it was given (google-auth's own JWT verification), its issuer, audience (Google's token URL,
which google-auth always signs for, whatever `token_uri` it posts to) and scope,
counts the grants, and answers `{"access_token", "expires_in", "token_type"}`.
`expires_in` is scriptable so a test can make tokens expire; `fail_next` answers errors.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from google.auth import jwt

GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


@dataclass
class FakeGoogleOAuth:
    """Token endpoint state. `accounts` maps a client email to its public key (PEM)."""

    accounts: dict[str, str] = field(default_factory=dict)
    expires_in: int = 3600
    requests: int = 0
    issued: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    fail_next: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/token", self._token)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/token"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _refuse(self, why: str) -> web.Response:
        self.violations.append(why)
        return web.json_response({"error": "invalid_grant", "error_description": why}, status=400)

    async def _token(self, request: web.Request) -> web.Response:
        self.requests += 1
        form = await request.post()
        if form.get("grant_type") != JWT_BEARER:
            return self._refuse(f"grant_type {form.get('grant_type')!r}")
        assertion = form.get("assertion")
        if not isinstance(assertion, str):
            return self._refuse("no assertion")
        unverified = jwt.decode(assertion, verify=False)  # type: ignore[no-untyped-call]
        key = self.accounts.get(str(unverified.get("iss")))
        if key is None:
            return self._refuse(f"unknown issuer {unverified.get('iss')!r}")
        try:
            claims = jwt.decode(assertion, certs=key, audience=GOOGLE_TOKEN_URL)  # type: ignore[no-untyped-call]
        except ValueError as exc:
            return self._refuse(f"Invalid JWT Signature: {exc}")
        if claims.get("scope") != "https://www.googleapis.com/auth/cloud-platform":
            return self._refuse(f"scope {claims.get('scope')!r}")
        if self.fail_next:
            status, body = self.fail_next.pop(0)
            return web.json_response(body, status=status)
        token = "ya29.fake-" + secrets.token_urlsafe(16)
        self.issued.append(token)
        return web.json_response(
            {"access_token": token, "expires_in": self.expires_in, "token_type": "Bearer"}
        )
