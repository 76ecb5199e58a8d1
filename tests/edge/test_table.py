"""The edge's route table resolves as aiohttp's dispatcher did: literal paths, `{field}`
templates matching one non-empty segment, 404 vs 405 with the allowed methods."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from tunegate.edge._app import UnaryHandler, _Endpoint, _MethodNotAllowed, _NotFound, _Table
from tunegate.edge._http import Incoming, Reply


def _endpoint(name: str) -> _Endpoint:
    async def handle(_incoming: Incoming, _params: Mapping[str, str], _request_id: str) -> Reply:
        return Reply(200, name.encode(), {})

    handle.__name__ = name
    unary: UnaryHandler = handle
    return _Endpoint(unary=unary)


def _name(table: _Table, method: str, path: str) -> tuple[str, Mapping[str, str]]:
    resolution = table.resolve(method, path)
    assert resolution.miss is None and resolution.endpoint is not None
    assert resolution.endpoint.unary is not None
    return resolution.endpoint.unary.__name__, resolution.params


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
        table.add(method, path, _endpoint(f"{method} {path}"))
    return table


def test_literal_and_template_paths(table: _Table) -> None:
    assert _name(table, "POST", "/v1/files") == ("POST /v1/files", {})
    delete = _name(table, "DELETE", "/v1/files/file-abc")
    assert delete == ("DELETE /v1/files/{file_id}", {"file_id": "file-abc"})
    content = _name(table, "GET", "/v1/files/file-abc/content")
    assert content == ("GET /v1/files/{file_id}/content", {"file_id": "file-abc"})
    _, params = _name(table, "POST", "/v1/fine_tuning/jobs/ftjob-1/cancel")
    assert params == {"fine_tuning_job_id": "ftjob-1"}


def test_values_are_decoded_after_matching(table: _Table) -> None:
    # The path arrives as aiohttp's `path_safe`: decoded except %2F and %25, which stay inside
    # one segment while matching and are decoded in the value.
    _, params = _name(table, "GET", "/v1/files/a%2Fb%25c")
    assert params == {"file_id": "a/b%c"}


@pytest.mark.parametrize(
    "path", ["/v1/nothing", "/v1/files/", "/v1/files/a/b", "/v1/files/a/content/x", "/v1/filesx"]
)
def test_unknown_paths(table: _Table, path: str) -> None:
    resolution = table.resolve("GET", path)
    assert isinstance(resolution.miss, _NotFound) and resolution.endpoint is None


def test_known_path_with_another_method(table: _Table) -> None:
    miss = table.resolve("PUT", "/v1/files").miss
    assert isinstance(miss, _MethodNotAllowed) and miss.allowed == "GET,POST"
    miss = table.resolve("POST", "/v1/files/file-abc").miss
    assert isinstance(miss, _MethodNotAllowed) and miss.allowed == "DELETE,GET"
