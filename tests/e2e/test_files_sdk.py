"""Files through the official `openai` SDK, against a live edge + server on 127.0.0.1:0."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import openai
import pytest

from tests.conftest import Gateway
from tests.e2e.sdk import openai_client

TRAINING = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'


@pytest.fixture
def client(gateway: Gateway, api_key: str) -> openai.OpenAI:
    return openai_client(gateway.base_url, api_key, max_retries=0)


def test_create_from_bytes_then_retrieve_content_delete(client: openai.OpenAI) -> None:
    created = client.files.create(file=("train.jsonl", TRAINING), purpose="fine-tune")
    assert created.id.startswith("file-")
    assert created.object == "file"
    assert created.filename == "train.jsonl"
    assert created.bytes == len(TRAINING)
    assert created.purpose == "fine-tune"
    assert created.status == "processed"
    assert isinstance(created.created_at, int)

    fetched = client.files.retrieve(created.id)
    assert fetched == created

    assert client.files.content(created.id).read() == TRAINING

    deleted = client.files.delete(created.id)
    assert (deleted.id, deleted.deleted, deleted.object) == (created.id, True, "file")
    with pytest.raises(openai.NotFoundError) as err:
        client.files.retrieve(created.id)
    assert err.value.status_code == 404
    body = err.value.body
    assert isinstance(body, dict)
    assert set(body) == {"message", "type", "param", "code"}
    assert body["type"] == "invalid_request_error"
    assert created.id in body["message"]
    with pytest.raises(openai.NotFoundError):
        client.files.content(created.id)


def test_create_from_path(client: openai.OpenAI, tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    payload = TRAINING * 1000
    path.write_bytes(payload)
    created = client.files.create(file=path, purpose="fine-tune")
    assert created.filename == "data.jsonl"
    assert created.bytes == len(payload)
    assert client.files.content(created.id).read() == payload


def test_large_file_round_trips_byte_for_byte(client: openai.OpenAI, tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    payload = bytes(range(256)) * (12 * 4096 + 7)  # ~12 MiB, not chunk-aligned
    path.write_bytes(payload)
    created = client.files.create(file=path, purpose="batch")
    assert created.bytes == len(payload)
    assert created.expires_at is not None  # batch files expire after 30 days by default
    assert created.expires_at - created.created_at == 30 * 24 * 3600
    assert client.files.content(created.id).read() == payload


def test_list_auto_paginates_in_both_orders_and_by_purpose(client: openai.OpenAI) -> None:
    ids = []
    for i in range(7):
        purpose: Literal["fine-tune", "batch"] = "fine-tune" if i % 2 == 0 else "batch"
        ids.append(client.files.create(file=(f"f{i}.jsonl", TRAINING), purpose=purpose).id)

    asc = [f.id for f in client.files.list(limit=2, order="asc")]
    assert asc == ids
    desc = [f.id for f in client.files.list(limit=3, order="desc")]
    assert desc == ids[::-1]
    default = [f.id for f in client.files.list(limit=2)]
    assert default == ids[::-1]

    page = client.files.list(limit=2, order="asc")
    assert page.has_more is True
    assert [f.id for f in page.data] == ids[:2]

    fine_tune = [f.id for f in client.files.list(purpose="fine-tune", limit=1, order="asc")]
    assert fine_tune == ids[0::2]
    batch = [f.id for f in client.files.list(purpose="batch", limit=2)]
    assert batch == ids[1::2][::-1]

    everything = client.files.list()
    assert [f.id for f in everything.data] == ids[::-1]
    assert everything.has_more is False


def test_list_cursor_is_stable_under_concurrent_inserts(client: openai.OpenAI) -> None:
    first = [client.files.create(file=(f"a{i}.jsonl", TRAINING), purpose="fine-tune").id for i in range(4)]
    pages = client.files.list(limit=2, order="desc")
    seen = [f.id for f in pages.data]
    # A file arriving between pages is newer than the cursor: it must not shift later pages.
    late = client.files.create(file=("late.jsonl", TRAINING), purpose="fine-tune").id
    seen += [f.id for f in client.files.list(limit=2, order="desc", after=seen[-1]).data]
    assert seen == first[::-1]
    assert late not in seen


def test_bad_purpose_is_a_bad_request_with_param(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.files.create(file=("x.jsonl", TRAINING), purpose="pretraining")  # type: ignore[arg-type]
    assert err.value.param == "purpose"
    with pytest.raises(openai.BadRequestError) as err:
        client.files.create(file=("x.jsonl", TRAINING), purpose="fine-tune-results")  # type: ignore[arg-type]
    assert err.value.param == "purpose"
    assert client.files.list().data == []


def test_list_rejects_bad_cursor_and_limit(client: openai.OpenAI) -> None:
    for bad in ("not-a-file-id", "file-../../etc", "file-" + "A" * 24):
        with pytest.raises(openai.BadRequestError) as err:
            client.files.list(after=bad)
        assert err.value.param == "after"
    for limit in (0, -1, 10001):
        with pytest.raises(openai.BadRequestError) as err:
            client.files.list(limit=limit)
        assert err.value.param == "limit"


def test_owner_scoping(gateway: Gateway, client: openai.OpenAI) -> None:
    mine = client.files.create(file=("mine.jsonl", TRAINING), purpose="fine-tune")
    other = openai_client(gateway.base_url, "sk-someone-else-entirely", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        other.files.retrieve(mine.id)
    with pytest.raises(openai.NotFoundError):
        other.files.content(mine.id)
    with pytest.raises(openai.NotFoundError):
        other.files.delete(mine.id)
    assert mine.id not in [f.id for f in other.files.list()]
    assert client.files.retrieve(mine.id).id == mine.id
