"""The adapters against the OpenAI and Azure fakes on 127.0.0.1 over real sockets — the transport
that production runs: files streamed up and back down, retries on 429/503 for GETs only."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import pytest
from tunegate.server.errors import ResourceExhausted, UpstreamError
from tunegate.server.providers import Account, AzureOpenAIProvider, OpenAIProvider

from tests.fakes import FakeAzureOpenAI, FakeOpenAI
from tests.fakes._common import FaultKind

from .support import Sleeps

LINE = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    server = FakeOpenAI(steps_per_get=0)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def adapter() -> AsyncIterator[tuple[OpenAIProvider, Sleeps]]:
    sleeps = Sleeps()
    provider = OpenAIProvider(sleep=sleeps, jitter=lambda: 0.0)
    yield provider, sleeps
    await provider.aclose()


def account(fake: FakeOpenAI) -> Account:
    return Account(provider="openai", key="openai:key:net", base_url=fake.base_url, credential="sk-net")


async def upload(provider: OpenAIProvider, fake: FakeOpenAI, lines: int) -> tuple[str, bytes]:
    async def source() -> AsyncIterator[bytes]:
        for _ in range(lines // 1000):
            yield LINE * 1000

    uploaded = await provider.upload_file(
        account(fake), filename="train.jsonl", purpose="fine-tune", size=len(LINE) * lines, chunks=source()
    )
    return uploaded.id, hashlib.sha256(LINE * lines).digest()


async def test_a_file_streams_up_and_back_down(
    fake: FakeOpenAI, adapter: tuple[OpenAIProvider, Sleeps]
) -> None:
    provider, _ = adapter
    lines = 40_000  # ~3.5 MB: many chunks each way
    file_id, digest = await upload(provider, fake, lines)
    (sent,) = fake.requests_to("POST", "/v1/files$")
    assert sent.file_bytes == len(LINE) * lines  # the fake received the whole file
    assert sent.headers["content-length"] and "transfer-encoding" not in sent.headers

    download = await provider.download_file(account(fake), file_id)
    assert (download.filename, download.purpose) == ("train.jsonl", "fine-tune")
    assert download.content_type == "application/octet-stream"
    received = hashlib.sha256()
    sizes = []
    async for chunk in download.chunks:
        received.update(chunk)
        sizes.append(len(chunk))
    assert received.digest() == digest
    assert len(sizes) > 1 and max(sizes) <= 1024 * 1024  # streamed in bounded chunks
    assert not fake.violations


@pytest.mark.parametrize("kind", ["429", "503"])
async def test_a_get_is_retried_after_the_providers_hint(
    fake: FakeOpenAI, adapter: tuple[OpenAIProvider, Sleeps], kind: FaultKind
) -> None:
    provider, sleeps = adapter
    file_id, _ = await upload(provider, fake, 1000)
    fake.inject(kind, f"/v1/files/{file_id}$", method="GET", times=2, retry_after=3)
    assert (await provider.get_file(account(fake), file_id)).id == file_id
    assert len(fake.requests_to("GET", f"/v1/files/{file_id}$")) == 3
    assert sleeps.delays == ([3.0, 3.0] if kind == "429" else [0.0, 0.0])  # 429s carry Retry-After


@pytest.mark.parametrize(("kind", "error"), [("429", ResourceExhausted), ("503", UpstreamError)])
async def test_a_create_is_never_retried(
    fake: FakeOpenAI, adapter: tuple[OpenAIProvider, Sleeps], kind: FaultKind, error: type[Exception]
) -> None:
    provider, sleeps = adapter
    file_id, _ = await upload(provider, fake, 1000)
    fake.inject(kind, "/v1/fine_tuning/jobs$", method="POST", retry_after=1)
    request = {"model": "gpt-4o-mini-2024-07-18", "training_file": file_id}
    with pytest.raises(error):
        await provider.create_job(account(fake), request, tag="ftjob-gw-net")
    assert len(fake.requests_to("POST", "/v1/fine_tuning/jobs$")) == 1 and sleeps.delays == []
    job = await provider.create_job(account(fake), request, tag="ftjob-gw-net")  # the fault is spent
    assert job["training_file"] == file_id and fake.job_count() == 1


@pytest.mark.parametrize("api_version", ["v1", "2024-10-21"])
async def test_azure_files_stream_up_and_back_down(api_version: str) -> None:
    fake = FakeAzureOpenAI(steps_per_get=1)
    await fake.start()
    provider = AzureOpenAIProvider(sleep=Sleeps())
    azure = Account(
        provider="azure-openai",
        key="azure-openai:key:net",
        base_url=fake.base_url("netres"),
        credential="azure-key",
        options={"resource_name": "netres", "api_version": api_version},
    )
    body = LINE * 20_000

    async def source() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 256 * 1024):
            yield body[start : start + 256 * 1024]

    try:
        uploaded = await provider.upload_file(
            azure, filename="train.jsonl", purpose="fine-tune", size=len(body), chunks=source()
        )
        download = await provider.download_file(azure, uploaded.id)
        assert download.filename == "train.jsonl"
        assert b"".join([chunk async for chunk in download.chunks]) == body
        assert not fake.violations
    finally:
        await provider.aclose()
        await fake.stop()
