"""`GET /v1/models` and `GET /v1/models/{model}` end to end, with the official `openai` SDK
(every response checked against OpenAI's spec) and the generated gRPC stubs.

Without a provider the gateway lists its own models: the local base model and the caller's own
fine-tuned models — one real (tiny) local job makes one. With a provider named, the provider's
adapter answers; here that is `ListingAdapter`, registered as `openai`, which records what it
was asked (the real OpenAI/Azure listings are tested with the providers)."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import grpc
import openai
import pytest
from tunegate.server.errors import NotFound
from tunegate.server.providers import LocalProvider, LocalSettings, ProviderSet
from tunegate.server.providers.interface import Account, Capability, JobObject
from tunegate.v1 import models_pb2, models_pb2_grpc

from tests.conftest import Gateway, start_gateway
from tests.e2e.local_rows import local_job
from tests.e2e.sdk import openai_client

BASE = "tunegate-tiny"
COLONS = "ft:gpt-4o-mini-2024-07-18:org-name:custom-model-v1:abc123"
SLASHES = "accounts/fireworks/models/llama-v3p1-8b-instruct"
WAIT = 120.0  # an upper bound for a tiny training run, never a speed claim


def _training(count: int = 10) -> str:
    lines = [
        {
            "messages": [
                {"role": "user", "content": f"Say w{i % 2}."},
                {"role": "assistant", "content": f"w{i % 2}"},
            ]
        }
        for i in range(count)
    ]
    return "".join(json.dumps(line) + "\n" for line in lines)


def _key() -> str:
    return "sk-test-" + secrets.token_hex(12)


def assert_gateway_404(error: openai.NotFoundError, model: str) -> None:
    body: Any = error.body
    assert body["code"] == "model_not_found" and body["param"] == "model"
    message = body["message"]
    assert f"'{model}'" in message  # the whole id, colons and slashes included, reached the server
    assert "gateway" in message and "x-portkey-provider" in message
    assert "does not exist or you do not have access" not in message  # not OpenAI's wording


# -- the gateway's own models (no provider named) ------------------------------------------------


class Tuned:
    """One succeeded local job of `owner_key`, found without ever polling it through the API."""

    def __init__(self, owner_key: str, job_id: str, model: str, finished_at: int) -> None:
        self.owner_key = owner_key
        self.job_id = job_id
        self.model = model
        self.finished_at = finished_at


@pytest.fixture(scope="module")
def local_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = start_gateway(tmp_path_factory.mktemp("models"), local_concurrency=1, local_train_threads=1)
    yield gw
    gw.close()


@pytest.fixture(scope="module")
def tuned(local_gateway: Gateway, tmp_path_factory: pytest.TempPathFactory) -> Tuned:
    owner_key = _key()
    client = openai_client(local_gateway.base_url, owner_key, max_retries=0)
    path = tmp_path_factory.mktemp("train") / "train.jsonl"
    path.write_text(_training())
    with path.open("rb") as stream:
        training = client.files.create(file=stream, purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(
        model=BASE,
        training_file=training,
        suffix="listed",
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": 4}}},
    )
    # Wait on the local trainer's own record, not the API: the registry's snapshot of the job
    # is then still `validating_files`, and the listing must find the model anyway.
    deadline = time.monotonic() + WAIT
    while True:
        native = local_job(local_gateway.data_dir, tag=job.id)
        if native is not None:
            assert native["status"] not in ("failed", "cancelled"), native.get("error")
            if native["status"] == "succeeded":
                return Tuned(owner_key, job.id, native["fine_tuned_model"], native["finished_at"])
        assert time.monotonic() < deadline, f"{job.id} did not finish"
        time.sleep(0.2)


def test_base_models_are_listed_and_retrieved(local_gateway: Gateway) -> None:
    client = openai_client(local_gateway.base_url, _key(), max_retries=0)
    models = list(client.models.list())
    assert [m.id for m in models] == [BASE]  # a new caller has no fine-tuned models
    (base,) = models
    assert base.object == "model" and base.owned_by == "tunegate" and base.created > 0
    retrieved = client.models.retrieve(BASE)
    assert retrieved.model_dump() == base.model_dump()


def test_a_fine_tuned_model_is_listed_for_its_owner_only(local_gateway: Gateway, tuned: Tuned) -> None:
    assert tuned.model.startswith(f"ft:{BASE}:local:listed:")
    owner = openai_client(local_gateway.base_url, tuned.owner_key, max_retries=0)
    by_id = {m.id: m for m in owner.models.list()}
    assert set(by_id) == {BASE, tuned.model}
    model = by_id[tuned.model]
    assert model.object == "model" and model.created == tuned.finished_at
    assert model.owned_by == "local"  # the name's organization segment, never the owner scope
    # An id with colons is one path variable.
    assert owner.models.retrieve(tuned.model).model_dump() == model.model_dump()

    other = openai_client(local_gateway.base_url, _key(), max_retries=0)
    assert [m.id for m in other.models.list()] == [BASE]
    with pytest.raises(openai.NotFoundError) as foreign:
        other.models.retrieve(tuned.model)
    assert_gateway_404(foreign.value, tuned.model)


@pytest.mark.parametrize("model", [COLONS, SLASHES, "gpt-4o-mini"])
def test_an_unknown_model_is_the_gateways_404(local_gateway: Gateway, model: str) -> None:
    client = openai_client(local_gateway.base_url, _key(), max_retries=0)
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve(model)  # the SDK sends a `/` as %2F
    assert_gateway_404(missing.value, model)


def test_the_local_provider_named_lists_the_same_models(local_gateway: Gateway, tuned: Tuned) -> None:
    client = openai_client(
        local_gateway.base_url,
        tuned.owner_key,
        max_retries=0,
        default_headers={"x-portkey-provider": "local"},
    )
    assert {m.id for m in client.models.list()} == {BASE, tuned.model}


def test_grpc_stubs(local_gateway: Gateway, tuned: Tuned) -> None:
    owner = (("authorization", f"Bearer {tuned.owner_key}"),)
    other = (("authorization", f"Bearer {_key()}"),)
    with grpc.insecure_channel(local_gateway.grpc_target) as channel:
        stub = models_pb2_grpc.ModelsStub(channel)
        listed = stub.ListModels(models_pb2.ListModelsRequest(), metadata=owner, timeout=30)
        assert {m.id for m in listed.data} == {BASE, tuned.model}
        got = stub.GetModel(models_pb2.GetModelRequest(model=tuned.model), metadata=owner, timeout=30)
        assert (got.id, got.owned_by, got.created) == (tuned.model, "local", tuned.finished_at)
        assert [m.id for m in stub.ListModels(models_pb2.ListModelsRequest(), metadata=other).data] == [BASE]
        with pytest.raises(grpc.RpcError) as foreign:
            stub.GetModel(models_pb2.GetModelRequest(model=tuned.model), metadata=other, timeout=30)
        assert foreign.value.code() == grpc.StatusCode.NOT_FOUND
        assert "x-portkey-provider" in (foreign.value.details() or "")
        with pytest.raises(grpc.RpcError) as empty:
            stub.GetModel(models_pb2.GetModelRequest(), metadata=owner, timeout=30)
        assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# -- a provider named ----------------------------------------------------------------------------

NO_MODELS_KEY = "sk-no-models"


class ListingAdapter:
    """An `openai` adapter with `MODELS` that lists two models and records its calls. An account
    whose credential is `NO_MODELS_KEY` lacks `MODELS` (as an adapter without it would)."""

    name = "openai"
    capabilities = frozenset({Capability.MODELS})
    pages_by_id = True
    MODELS: list[JobObject] = [  # noqa: RUF012
        {"id": "gpt-4o-mini", "object": "model", "created": 1721172741, "owned_by": "system"},
        {
            "id": COLONS,
            "object": "model",
            "created": 1735000000,
            "owned_by": "org-name",
            "shutdown_date": None,
        },
        {"id": SLASHES, "object": "model", "created": 1730000000, "owned_by": "fireworks"},
    ]

    def __init__(self) -> None:
        self.calls: list[Any] = []  # (operation, credential, model or None)

    def capabilities_for(self, account: Account) -> frozenset[Capability]:
        return frozenset() if account.credential == NO_MODELS_KEY else self.capabilities

    async def list_models(self, account: Account) -> list[JobObject]:
        self.calls.append(("list", account.credential, None))
        return self.MODELS

    async def get_model(self, account: Account, model: str) -> JobObject:
        self.calls.append(("get", account.credential, model))
        for item in self.MODELS:
            if item["id"] == model:
                return item
        raise NotFound(f"The model '{model}' does not exist", code="model_not_found", param="model")

    async def aclose(self) -> None:
        return None


@pytest.fixture(scope="module", params=["grpc", "in-process"])
def provider_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Gateway, ListingAdapter]]:
    adapter = ListingAdapter()
    data_dir = tmp_path_factory.mktemp("models-provider")
    local = LocalProvider(LocalSettings(root=data_dir / "local"))
    providers = ProviderSet([adapter, local])  # type: ignore[list-item]  # a partial adapter
    gw = start_gateway(data_dir, in_process=request.param == "in-process", providers=providers)
    yield gw, adapter
    gw.close()


def test_a_named_provider_lists_its_own_models(provider_stack: tuple[Gateway, ListingAdapter]) -> None:
    gateway, adapter = provider_stack
    key = _key()
    client = openai_client(
        gateway.base_url, key, max_retries=0, default_headers={"x-portkey-provider": "openai"}
    )
    listed = [m.model_dump(exclude_unset=True) for m in client.models.list()]
    assert listed == [
        {k: v for k, v in m.items() if k in ("id", "object", "created", "owned_by")} for m in adapter.MODELS
    ]
    assert adapter.calls[-1] == ("list", key, None)
    for model in (COLONS, SLASHES):
        assert client.models.retrieve(model).id == model
        assert adapter.calls[-1] == ("get", key, model)  # the id reached the provider whole
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("gpt-9")
    assert missing.value.body["message"] == "The model 'gpt-9' does not exist"  # type: ignore[index]
    assert adapter.calls[-1] == ("get", key, "gpt-9")


def test_without_a_provider_the_gateways_models_answer(
    provider_stack: tuple[Gateway, ListingAdapter],
) -> None:
    gateway, adapter = provider_stack
    before = len(adapter.calls)
    client = openai_client(gateway.base_url, _key(), max_retries=0)
    assert [m.id for m in client.models.list()] == [BASE]
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve(COLONS)
    assert_gateway_404(missing.value, COLONS)
    assert len(adapter.calls) == before  # the provider was never asked


def test_a_provider_without_models_is_unsupported(provider_stack: tuple[Gateway, ListingAdapter]) -> None:
    gateway, adapter = provider_stack
    before = len(adapter.calls)
    client = openai_client(
        gateway.base_url, NO_MODELS_KEY, max_retries=0, default_headers={"x-portkey-provider": "openai"}
    )
    for call in (client.models.list, lambda: client.models.retrieve("gpt-4o-mini")):
        with pytest.raises(openai.BadRequestError) as refused:
            call()
        assert refused.value.body["code"] == "unsupported_by_provider"  # type: ignore[index]
    assert len(adapter.calls) == before


def test_grpc_stubs_with_a_provider(provider_stack: tuple[Gateway, ListingAdapter]) -> None:
    gateway, adapter = provider_stack
    key = _key()
    metadata = (("authorization", f"Bearer {key}"), ("x-portkey-provider", "openai"))
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        stub = models_pb2_grpc.ModelsStub(channel)
        listed = stub.ListModels(models_pb2.ListModelsRequest(), metadata=metadata, timeout=30)
        assert [(m.id, m.created, m.owned_by) for m in listed.data] == [
            (m["id"], m["created"], m["owned_by"]) for m in adapter.MODELS
        ]
        got = stub.GetModel(models_pb2.GetModelRequest(model=SLASHES), metadata=metadata, timeout=30)
        assert got.owned_by == "fireworks" and adapter.calls[-1] == ("get", key, SLASHES)
