"""An upload whose call names a provider it cannot reach is refused with a 400 naming the header
before anything is stored — not stored, answered 200 and logged as an error afterwards."""

from __future__ import annotations

import logging

import httpx
import pytest

from tests.conftest import Gateway

REFUSED = [
    (
        {"x-portkey-provider": "openai", "x-portkey-custom-host": "http://evil.example:9/v1"},
        "x-portkey-custom-host",
    ),
    ({"x-portkey-provider": "nope"}, "x-portkey-provider"),
    ({"x-portkey-provider": "azure-openai"}, "x-portkey-azure-resource-name"),
]


def _blobs(gateway: Gateway) -> set[str]:
    return {str(path) for path in (gateway.data_dir / "blobs").rglob("*") if path.is_file()}


@pytest.mark.parametrize(("route", "param"), REFUSED)
def test_an_upload_with_a_route_that_does_not_resolve_is_refused_first(
    gateway: Gateway, api_key: str, route: dict[str, str], param: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    blobs_before = _blobs(gateway)
    answer = httpx.post(
        gateway.base_url + "/files",
        headers={"Authorization": f"Bearer {api_key}", **route},
        data={"purpose": "fine-tune"},
        files={"file": ("train.jsonl", b'{"messages": []}\n' * 1000)},
    )
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    listed = httpx.get(gateway.base_url + "/files", headers={"Authorization": f"Bearer {api_key}"})
    assert listed.json()["data"] == []
    assert _blobs(gateway) == blobs_before
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
