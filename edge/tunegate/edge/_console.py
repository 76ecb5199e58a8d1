"""The web console: ``GET /console`` and its static assets, served by the edge itself.

The console is plain HTML, CSS and JavaScript modules shipped in the package
(``tunegate/edge/console/``): nothing is built at install time and nothing is fetched from
another origin. It calls the same REST API as any client, with the credentials the user types
kept in the browser tab (``sessionStorage``); this module only hands out the files.

The assets are read once, when the edge starts, and answered from memory with a strong
``ETag`` (``If-None-Match`` gets a ``304``) and ``Cache-Control: no-cache``, so a browser
revalidates on each load and an upgraded gateway's console is never stale. Every answer carries
a Content-Security-Policy that allows this origin only: no inline script, no other host.
"""

from __future__ import annotations

import hashlib
import importlib.resources
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web

__all__ = ["CONSOLE_PATH", "Console"]

CONSOLE_PATH = "/console"
_INDEX = "index.html"
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
}


@dataclass(frozen=True, slots=True)
class _Asset:
    body: bytes
    content_type: str
    etag: str


class Console:
    """The console's files by name (``index.html``, ``console.js``, …), read from the package."""

    def __init__(self) -> None:
        folder = importlib.resources.files("tunegate.edge") / "console"
        assets: dict[str, _Asset] = {}
        for entry in folder.iterdir():
            suffix = "." + entry.name.rsplit(".", 1)[-1]
            if entry.is_file() and suffix in _TYPES:
                body = entry.read_bytes()
                etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
                assets[entry.name] = _Asset(body, _TYPES[suffix], etag)
        if _INDEX not in assets:
            raise RuntimeError("the console's index.html is missing from the package")
        self._assets = assets

    def names(self) -> list[str]:
        return sorted(self._assets)

    async def index(
        self, request: web.BaseRequest, _params: Mapping[str, str], request_id: str
    ) -> web.StreamResponse:
        """``/console`` and ``/console/``: the page (its links are absolute, so both work)."""
        return self._answer(request, self._assets[_INDEX])

    async def asset(
        self, request: web.BaseRequest, params: Mapping[str, str], request_id: str
    ) -> web.StreamResponse:
        asset = self._assets.get(params["asset"])
        if asset is None:
            raise web.HTTPNotFound(reason=f"No such console file: {params['asset']}")
        return self._answer(request, asset)

    @staticmethod
    def _answer(request: web.BaseRequest, asset: _Asset) -> web.Response:
        headers = {**_HEADERS, "ETag": asset.etag}
        if asset.etag in _etags(request.headers.get("If-None-Match", "")):
            return web.Response(status=304, headers=headers)
        response = web.Response(body=asset.body, headers=headers)
        response.headers["Content-Type"] = asset.content_type
        return response


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}
