"""OpenAI's Uploads API (parts, complete, cancel) through the official SDK."""

from __future__ import annotations

import hashlib
from pathlib import Path

import openai
import pytest

from tests.conftest import Gateway
from tests.e2e.sdk import openai_client


@pytest.fixture
def client(gateway: Gateway, api_key: str) -> openai.OpenAI:
    return openai_client(gateway.base_url, api_key, max_retries=0)


def test_upload_file_chunked_assembles_a_file(client: openai.OpenAI, tmp_path: Path) -> None:
    payload = b"".join(b'{"n": %d}\n' % i for i in range(40_000))
    path = tmp_path / "big.jsonl"
    path.write_bytes(payload)
    upload = client.uploads.upload_file_chunked(
        file=path,
        mime_type="text/jsonl",
        purpose="fine-tune",
        part_size=100_000,
        md5=hashlib.md5(payload).hexdigest(),
    )
    assert upload.status == "completed"
    assert upload.file is not None
    assert upload.file.bytes == len(payload)
    assert upload.file.filename == "big.jsonl"
    assert client.files.content(upload.file.id).read() == payload
    assert client.files.retrieve(upload.file.id).purpose == "fine-tune"


def test_parts_are_assembled_in_the_order_given(client: openai.OpenAI) -> None:
    upload = client.uploads.create(bytes=9, filename="abc.jsonl", mime_type="text/jsonl", purpose="fine-tune")
    assert upload.status == "pending"
    parts = [client.uploads.parts.create(upload.id, data=chunk) for chunk in (b"aaa", b"bbb", b"ccc")]
    assert all(p.upload_id == upload.id for p in parts)
    done = client.uploads.complete(upload.id, part_ids=[parts[2].id, parts[0].id, parts[1].id])
    assert done.file is not None
    assert client.files.content(done.file.id).read() == b"cccaaabbb"


def test_wrong_total_md5_and_cancel(client: openai.OpenAI) -> None:
    upload = client.uploads.create(bytes=10, filename="x.jsonl", mime_type="text/jsonl", purpose="fine-tune")
    part = client.uploads.parts.create(upload.id, data=b"12345")
    with pytest.raises(openai.BadRequestError):
        client.uploads.complete(upload.id, part_ids=[part.id])  # 5 bytes declared as 10
    other = client.uploads.parts.create(upload.id, data=b"67890")
    with pytest.raises(openai.BadRequestError):
        client.uploads.complete(upload.id, part_ids=[part.id, other.id], md5="0" * 32)
    cancelled = client.uploads.cancel(upload.id)
    assert cancelled.status == "cancelled"
    with pytest.raises(openai.BadRequestError):
        client.uploads.parts.create(upload.id, data=b"more")
    assert client.files.list().data == []
