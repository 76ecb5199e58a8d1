"""Credentials that cannot be read: a 400 naming the header, over REST and gRPC — never the
anonymous scope, never another credential's — and no cross-owner read on any route."""

from __future__ import annotations

import http.client
import json
import secrets
from collections.abc import Callable
from typing import cast
from urllib.parse import urlsplit

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from tunegate.v1 import files_pb2, files_pb2_grpc, fine_tuning_pb2, fine_tuning_pb2_grpc

from tests.conftest import Gateway

# (header, raw value bytes): latin-1 and UTF-8 encodings, and control bytes.
UNREADABLE: list[tuple[str, bytes]] = [
    ("x-portkey-api-key", "pk-é".encode()),
    ("x-portkey-api-key", "pk-é".encode("latin-1")),
    ("authorization", "Bearer sk-é".encode()),
    ("authorization", "Bearer sk-é".encode("latin-1")),
    ("api-key", "sk-é".encode()),
    ("x-portkey-virtual-key", "vk-é".encode()),
    ("x-portkey-aws-secret-access-key", "s-é".encode()),
    ("x-portkey-vertex-service-account-json", "{é}".encode()),
]


def raw(
    gw: Gateway, method: str, path: str, headers: list[tuple[str, bytes]], body: bytes = b""
) -> tuple[int, bytes]:
    """One request over http.client, whose header values may be any bytes (the SDK refuses some)."""
    url = urlsplit(gw.base_url)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=30)
    try:
        conn.putrequest(method, url.path + path)
        for name, value in headers:
            conn.putheader(name, value)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body or None)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def upload(gw: Gateway, headers: dict[str, str]) -> str:
    files = {"file": ("t.jsonl", b'{"prompt": "a", "completion": "b"}\n')}
    response = httpx.post(
        gw.base_url + "/files", data={"purpose": "batch"}, files=files, headers=headers, timeout=30
    )
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def assert_refused(status: int, body: bytes, header: str) -> None:
    assert status == 400, body
    error = json.loads(body)["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == header
    assert b"file-" not in body and b"ftjob-" not in body


@pytest.mark.parametrize(("header", "value"), UNREADABLE)
def test_rest_unreadable_credential_is_400(gateway: Gateway, header: str, value: bytes) -> None:
    anonymous = upload(gateway, {})
    for method, path in [
        ("GET", "/files"),
        ("GET", f"/files/{anonymous}"),
        ("GET", f"/files/{anonymous}/content"),
        ("DELETE", f"/files/{anonymous}"),
        ("GET", "/fine_tuning/jobs"),
        ("GET", "/fine_tuning/jobs/ftjob-x"),
        ("GET", "/fine_tuning/jobs/ftjob-x/events"),
        ("GET", "/fine_tuning/jobs/ftjob-x/checkpoints"),
    ]:
        assert_refused(*raw(gateway, method, path, [(header, value)]), header)
    assert httpx.get(f"{gateway.base_url}/files/{anonymous}", timeout=30).status_code == 200  # not deleted


def test_rest_upload_with_unreadable_tenant_key_is_refused(gateway: Gateway, api_key: str) -> None:
    """`pk-é` plus `Bearer sk-X`: refused, not stored under `sk-X`."""
    boundary = "b" + secrets.token_hex(8)
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="t.jsonl"\r\n\r\n'
        f'{{"a": 1}}\r\n--{boundary}--\r\n'
    ).encode()
    headers = [
        ("x-portkey-api-key", "pk-é".encode()),
        ("authorization", f"Bearer {api_key}".encode()),
        ("content-type", f"multipart/form-data; boundary={boundary}".encode()),
    ]
    assert_refused(*raw(gateway, "POST", "/files", headers, body), "x-portkey-api-key")
    listed = httpx.get(
        gateway.base_url + "/files", headers={"Authorization": f"Bearer {api_key}"}, timeout=30
    )
    assert listed.json()["data"] == []


def test_owners_never_read_each_other(gateway: Gateway, api_key: str) -> None:
    other = api_key + "-other"
    mine = upload(gateway, {"Authorization": f"Bearer {api_key}"})
    theirs = upload(gateway, {"x-portkey-api-key": "pk-" + other})
    anonymous = upload(gateway, {})
    cross_reads = 0
    for own, foreign in [
        ({"Authorization": f"Bearer {api_key}"}, [theirs, anonymous]),
        ({"x-portkey-api-key": "pk-" + other}, [mine, anonymous]),
        ({}, [mine, theirs]),
    ]:
        listed = httpx.get(gateway.base_url + "/files", headers=own, timeout=30).json()["data"]
        cross_reads += sum(f["id"] in foreign for f in listed)
        for file_id in foreign:
            for method, suffix in [("GET", ""), ("GET", "/content"), ("DELETE", "")]:
                response = httpx.request(
                    method, f"{gateway.base_url}/files/{file_id}{suffix}", headers=own, timeout=30
                )
                cross_reads += response.status_code != 404
    assert cross_reads == 0


@pytest.mark.parametrize(
    "metadata",
    [
        (("authorization-bin", "Bearer sk-é".encode()),),
        (("x-portkey-api-key-bin", "pk-é".encode()),),
        (("x-portkey-api-key-bin", b"pk-1"), ("authorization", "Bearer sk-X")),
        (("api-key-bin", b"sk-1"),),
        (("x-portkey-virtual-key-bin", b"vk-1"),),
    ],
)
def test_grpc_unreadable_credential_is_invalid_argument(
    gateway: Gateway, metadata: tuple[tuple[str, bytes | str], ...]
) -> None:
    param = metadata[0][0].removesuffix("-bin")
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        files = files_pb2_grpc.FilesStub(channel)
        jobs = fine_tuning_pb2_grpc.FineTuningStub(channel)
        calls: list[Callable[[], object]] = [
            lambda: files.ListFiles(files_pb2.ListFilesRequest(), metadata=metadata),
            lambda: files.GetFile(files_pb2.GetFileRequest(file_id="file-x"), metadata=metadata),
            lambda: jobs.ListFineTuningJobs(fine_tuning_pb2.ListFineTuningJobsRequest(), metadata=metadata),
            lambda: jobs.GetFineTuningJob(
                fine_tuning_pb2.GetFineTuningJobRequest(fine_tuning_job_id="ftjob-x"), metadata=metadata
            ),
        ]
        for call in calls:
            with pytest.raises(grpc.RpcError) as raised:
                call()
            err = cast(grpc.Call, raised.value)
            assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
            status = rpc_status.from_call(err)
            assert status is not None
            fields = []
            for detail in status.details:
                if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                    bad = error_details_pb2.BadRequest()
                    detail.Unpack(bad)
                    fields += [v.field for v in bad.field_violations]
            assert fields == [param]
