"""Fireworks datasets (`fireworks._datasets`): ids, both upload flows and the READY wait against
`FakeFireworks` (which checks every request against the `fireworks-ai` SDK's models), and the
streaming line check."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import pytest
from tunegate.server.errors import Internal, InvalidArgument
from tunegate.server.providers._http import Endpoint, HttpClient, HttpSettings
from tunegate.server.providers._jsonl import LineConversionError, convert_with
from tunegate.server.providers.fireworks import _datasets
from tunegate.server.providers.fireworks._datasets import (
    check_lines,
    dataset_id,
    get_dataset,
    provider_file_from_dataset,
    upload_dataset,
)
from tunegate.server.providers.interface import ProviderFile

from tests.fakes.fireworks_upstream import FakeFireworks

ACCOUNT = "my-acct"
FILE_ID = "file-AbCdEf0123456789XyZwQrSt"


def chat_line(n: int) -> bytes:
    line = {"messages": [{"role": "user", "content": f"q{n}"}, {"role": "assistant", "content": f"a{n}"}]}
    return orjson.dumps(line)


def jsonl(n: int) -> bytes:
    return b"\n".join(chat_line(i) for i in range(n)) + b"\n"


async def chunked(data: bytes, size: int = 7) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.fixture
async def fake() -> AsyncIterator[FakeFireworks]:
    server = FakeFireworks(api_keys={"fw-key"}, accounts={ACCOUNT})
    await server.start()
    yield server
    await server.stop()
    assert server.violations == []


@pytest.fixture
async def http() -> AsyncIterator[HttpClient]:
    client = HttpClient("fireworks", HttpSettings(max_retries=0, http2=False, trust_env=False))
    yield client
    await client.aclose()


def endpoint(fake: FakeFireworks) -> Endpoint:
    return Endpoint(fake.base_url, {"Authorization": "Bearer fw-key"}, {})


async def upload(
    fake: FakeFireworks,
    http: HttpClient,
    data: bytes,
    *,
    size: int | None = None,
    chunks: AsyncIterator[bytes] | None = None,
    multipart_limit: int = _datasets.MULTIPART_LIMIT,
) -> ProviderFile:
    """`upload_dataset` of `data` as gateway file `FILE_ID` (`train.jsonl`), in 7-byte chunks."""
    return await upload_dataset(
        http,
        endpoint(fake),
        ACCOUNT,
        file_id=FILE_ID,
        filename="train.jsonl",
        size=len(data) if size is None else size,
        chunks=chunked(data) if chunks is None else chunks,
        multipart_limit=multipart_limit,
    )


# --- ids -----------------------------------------------------------------------------------------


def test_dataset_id_is_valid_deterministic_and_distinct() -> None:
    a = dataset_id(FILE_ID)
    b = dataset_id("file-abCdEf0123456789XyZwQrSt")  # differs in case only
    assert a == dataset_id(FILE_ID)
    assert a != b
    for ident in (a, b, dataset_id("file-" + "Z" * 48), dataset_id("file-0")):
        assert re.fullmatch(r"[a-z][a-z0-9-]{0,61}[a-z0-9]", ident), ident
    assert a.startswith("tg-abcdef0123456789xyzwqrst-")


@pytest.mark.parametrize("bad", ["", "file-", "ftjob-abc", "file-a_b", "file-" + "a" * 49, "FILE-abc"])
def test_dataset_id_refuses_other_ids(bad: str) -> None:
    with pytest.raises(ValueError):
        dataset_id(bad)


# --- uploads -------------------------------------------------------------------------------------


async def test_small_file_goes_multipart_and_becomes_ready(fake: FakeFireworks, http: HttpClient) -> None:
    data = jsonl(5)
    got = await upload(fake, http, data)
    ident = dataset_id(FILE_ID)
    assert got.id == ident and got.status == "uploaded"
    stored = fake.datasets[(ACCOUNT, ident)]
    assert stored.content() == data and stored.display_name == "train.jsonl"
    assert [r.path.rsplit("/", 1)[-1] for r in fake.requests] == [
        "datasets",
        f"{ident}:upload",
        f"{ident}:validateUpload",
    ]
    # READY polling: the fake answers UPLOADING to the first GET after validation.
    assert (await get_dataset(http, endpoint(fake), ACCOUNT, ident)).status == "uploaded"
    assert (await get_dataset(http, endpoint(fake), ACCOUNT, ident)).status == "processed"


async def test_large_file_goes_through_the_signed_url(fake: FakeFireworks, http: HttpClient) -> None:
    data = jsonl(50)
    got = await upload(fake, http, data, chunks=chunked(data, 64), multipart_limit=len(data) - 1)
    assert got.status == "uploaded"
    assert fake.datasets[(ACCOUNT, got.id)].content() == data
    put = fake.requests_to("PUT", "/signed-upload/")
    assert len(put) == 1
    assert put[0].headers["content-length"] == str(len(data))
    assert "authorization" not in put[0].headers  # the Fireworks key never reaches the storage host
    assert any(k == "X-Goog-Signature" for k, _ in put[0].query)  # the signed URL's query is kept
    assert fake.requests_to("POST", ":upload$") == []
    assert len(fake.requests_to("POST", ":validateUpload$")) == 1
    states = [(await get_dataset(http, endpoint(fake), ACCOUNT, got.id)).status for _ in range(3)]
    assert states == ["uploaded", "processed", "processed"]


async def test_signed_upload_refuses_a_short_source(fake: FakeFireworks, http: HttpClient) -> None:
    data = jsonl(5)
    with pytest.raises(Internal):
        await upload(fake, http, data, size=len(data) + 10, multipart_limit=1)
    assert fake.requests_to("POST", ":validateUpload$") == []
    fake.violations.clear()  # the fake saw a body shorter than its Content-Length


async def test_validation_failure_is_an_error_then_a_new_upload_replaces_it(
    fake: FakeFireworks, http: HttpClient
) -> None:
    ident = dataset_id(FILE_ID)
    fake.fail_validation[ident] = "Line 2: 'messages' must end with an assistant turn."
    data = jsonl(3)
    await upload(fake, http, data)
    got = await get_dataset(http, endpoint(fake), ACCOUNT, ident)
    assert got.status == "error"
    assert got.status_details == "Line 2: 'messages' must end with an assistant turn."
    # The next copy of the same file finds the dataset (409), not READY: it uploads into it again.
    del fake.fail_validation[ident]
    fake.ready_after_gets = 0
    assert (await upload(fake, http, data)).status == "uploaded"
    assert (await get_dataset(http, endpoint(fake), ACCOUNT, ident)).status == "processed"
    assert len(fake.requests_to("POST", ":upload$")) == 2


async def test_an_existing_ready_dataset_is_reused(fake: FakeFireworks, http: HttpClient) -> None:
    fake.ready_after_gets = 0
    data = jsonl(3)
    await upload(fake, http, data)
    fake.reset()

    async def unread() -> AsyncIterator[bytes]:
        if fake.port:
            raise AssertionError("a READY dataset is not uploaded again")
        yield b""

    again = await upload(fake, http, data, chunks=unread())
    assert again.status == "processed" and again.id == dataset_id(FILE_ID)
    assert [r.method for r in fake.requests] == ["POST", "GET"]


def test_dataset_states() -> None:
    assert provider_file_from_dataset("d", {"state": "READY"}).status == "processed"
    assert provider_file_from_dataset("d", {"state": "UPLOADING"}).status == "uploaded"
    assert (
        provider_file_from_dataset("d", {"state": "UPLOADING", "status": {"code": "OK"}}).status == "uploaded"
    )
    failed = provider_file_from_dataset("d", {"state": "UPLOADING", "status": {"code": "INVALID_ARGUMENT"}})
    assert failed.status == "error" and failed.status_details and "INVALID_ARGUMENT" in failed.status_details


# --- line checks ---------------------------------------------------------------------------------


def run_check(data: bytes, method: _datasets.Method = "supervised", size: int = 5) -> bytes:
    def pieces() -> Iterator[bytes]:
        for start in range(0, len(data), size):
            yield data[start : start + size]

    return b"".join(convert_with(check_lines(method, param="training_file"), pieces()))


@pytest.mark.parametrize("size", [1, 5, 64, 10_000])
def test_good_lines_pass_through_unchanged(size: int) -> None:
    data = (
        jsonl(4) + b"\n  \n" + chat_line(9) + b"\r\n" + chat_line(10)
    )  # blank lines, CRLF, no final newline
    assert run_check(data, size=size) == data


def test_dpo_lines_pass_through_unchanged() -> None:
    line = {
        "input": {"messages": [{"role": "user", "content": "q"}]},
        "preferred_output": [{"role": "assistant", "content": "good"}],
        "non_preferred_output": [{"role": "assistant", "content": "bad"}],
    }
    data = b"\n".join(orjson.dumps(line) for _ in range(3)) + b"\n"
    assert run_check(data, "dpo") == data


def test_every_bad_line_is_listed() -> None:
    lines = [
        chat_line(1),
        b"not json",
        orjson.dumps({"messages": [{"role": "user", "content": "no answer"}]}),
        chat_line(4),
        orjson.dumps(
            {"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}
        ),
        orjson.dumps(
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "a", "weight": 2},
                ]
            }
        ),
        orjson.dumps({"prompt": "p", "completion": "c"}),
        orjson.dumps(
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "a", "weight": True},
                ]
            }
        ),
        chat_line(8),
    ]
    with pytest.raises(LineConversionError) as caught:
        run_check(b"\n".join(lines))
    error = caught.value
    assert error.line_numbers() == [2, 3, 5, 6, 7, 8]
    assert error.param == "training_file" and error.code == "invalid_training_file"
    assert "2" in error.message and "7" in error.message


def test_dpo_checks() -> None:
    good: dict[str, Any] = {
        "input": {"messages": [{"role": "user", "content": "q"}]},
        "preferred_output": [{"role": "assistant", "content": "good"}],
        "non_preferred_output": [{"role": "assistant", "content": "bad"}],
    }
    old = {**good}
    old["preferred_completion"] = old.pop("preferred_output")
    two = {**good, "preferred_output": good["preferred_output"] * 2}
    ends_with_assistant = {**good, "input": {"messages": [{"role": "assistant", "content": "x"}]}}
    lines = [good, old, two, ends_with_assistant, {"messages": []}, good, good]
    with pytest.raises(LineConversionError) as caught:
        run_check(b"\n".join(orjson.dumps(x) for x in lines), "dpo")
    assert caught.value.line_numbers() == [2, 3, 4, 5]


def test_too_few_examples() -> None:
    with pytest.raises(InvalidArgument) as caught:
        run_check(jsonl(2))
    assert caught.value.code == "invalid_training_file" and caught.value.param == "training_file"


def test_checked_bytes_upload_unchanged() -> None:
    data = jsonl(3)
    out = run_check(data, size=3)
    assert out == data and len(out) == len(data)  # the declared size stays exact
