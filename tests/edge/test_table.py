"""The edge's route table resolves as aiohttp's dispatcher did: literal paths, `{field}`
templates matching one non-empty segment, 404 vs 405 with the allowed methods."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from aiohttp import web

from edge._app import Handler, _MethodNotAllowed, _NotFound, _Table


def _handler(name: str) -> Handler:
    async def handle(
        _request: web.BaseRequest, _params: Mapping[str, str], _request_id: str
    ) -> web.StreamResponse:
        return web.Response(text=name)

    handle.__name__ = name
    return handle


@pytest.fixture
def table() -> _Table:
    table = _Table()
    for method, path in [
        ("GET", "/v1/files"),
        ("POST", "/v1/files"),
        ("GET", "/v1/files/{file_id}"),
        ("DELETE", "/v1/files/{file_id}"),
        ("GET", "/v1/files/{file_id}/content"),
        ("POST", "/v1/fine_tuning/jobs/{fine_tuning_job_id}/cancel"),
    ]:
        table.add(method, path, _handler(f"{method} {path}"))
    return table


def test_literal_and_template_paths(table: _Table) -> None:
    handler, params = table.resolve("POST", "/v1/files")
    assert handler.__name__ == "POST /v1/files" and params == {}
    handler, params = table.resolve("DELETE", "/v1/files/file-abc")
    assert handler.__name__ == "DELETE /v1/files/{file_id}" and params == {"file_id": "file-abc"}
    handler, params = table.resolve("GET", "/v1/files/file-abc/content")
    assert handler.__name__ == "GET /v1/files/{file_id}/content" and params == {"file_id": "file-abc"}
    _, params = table.resolve("POST", "/v1/fine_tuning/jobs/ftjob-1/cancel")
    assert params == {"fine_tuning_job_id": "ftjob-1"}


def test_values_are_decoded_after_matching(table: _Table) -> None:
    # The path arrives as aiohttp's `path_safe`: decoded except %2F and %25, which stay inside
    # one segment while matching and are decoded in the value.
    _, params = table.resolve("GET", "/v1/files/a%2Fb%25c")
    assert params == {"file_id": "a/b%c"}


@pytest.mark.parametrize(
    "path", ["/v1/nothing", "/v1/files/", "/v1/files/a/b", "/v1/files/a/content/x", "/v1/filesx"]
)
def test_unknown_paths(table: _Table, path: str) -> None:
    with pytest.raises(_NotFound):
        table.resolve("GET", path)


def test_known_path_with_another_method(table: _Table) -> None:
    with pytest.raises(_MethodNotAllowed) as caught:
        table.resolve("PUT", "/v1/files")
    assert caught.value.allowed == "GET,POST"
    with pytest.raises(_MethodNotAllowed) as caught:
        table.resolve("POST", "/v1/files/file-abc")
    assert caught.value.allowed == "DELETE,GET"
