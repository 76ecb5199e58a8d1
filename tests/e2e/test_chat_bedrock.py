"""Chat with a tuned Bedrock model through the gateway: the OpenAI and Portkey SDKs against a
fake Bedrock Runtime (Converse / ConverseStream, every request checked against botocore's
service model), reached through an allow-listed `x-portkey-custom-host`."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from tunegate.server.routing import RoutingConfig

from tests.conftest import Gateway, start_gateway
from tests.e2e.bedrock import AWS_HEADERS
from tests.fakes.bedrock_runtime import ConverseScript, FakeBedrockRuntime

PROVISIONED = "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abc123xyz"
CUSTOM = "arn:aws:bedrock:us-east-1:123456789012:custom-model/amazon.nova-micro-v1:0:128k/tuned1"
TENANT = {"x-portkey-api-key": "pk-bedrock-chat"}


@pytest.fixture(scope="module")
def runtime() -> Iterator[FakeBedrockRuntime]:
    fake = FakeBedrockRuntime(script=ConverseScript(text="Bonjour, je suis le modèle ajusté."))
    fake.start_in_thread(0)
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def gateway(runtime: FakeBedrockRuntime, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = start_gateway(
        tmp_path_factory.mktemp("bedrock-chat"), routing=RoutingConfig(allowed_custom_hosts=("127.0.0.1",))
    )
    yield gw
    gw.close()


def sdk(gateway: Gateway, runtime: FakeBedrockRuntime, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=gateway.base_url,
        api_key="placeholder",
        default_headers={**TENANT, **AWS_HEADERS, "x-portkey-custom-host": runtime.url, **headers},
        max_retries=0,
    )


def test_whole_answer(gateway: Gateway, runtime: FakeBedrockRuntime) -> None:
    reply = sdk(gateway, runtime).chat.completions.create(
        model=PROVISIONED,
        messages=[
            {"role": "system", "content": "Réponds en français."},
            {"role": "user", "content": "Salut"},
        ],
        max_tokens=50,
    )
    assert reply.choices[0].message.content == "Bonjour, je suis le modèle ajusté."
    assert reply.choices[0].finish_reason == "stop"
    assert reply.model == PROVISIONED and reply.usage is not None and reply.usage.completion_tokens == 7
    call = runtime.calls[-1]
    assert call.operation == "Converse" and call.model_id == PROVISIONED
    assert call.body["system"] == [{"text": "Réponds en français."}]
    assert call.body["inferenceConfig"] == {"maxTokens": 50}


def test_streamed_answer(gateway: Gateway, runtime: FakeBedrockRuntime) -> None:
    stream = sdk(gateway, runtime).chat.completions.create(
        model=PROVISIONED,
        messages=[{"role": "user", "content": "Salut"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Bonjour, je suis le modèle ajusté."
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 18
    assert runtime.calls[-1].operation == "ConverseStream"


def test_deployment_from_the_header(gateway: Gateway, runtime: FakeBedrockRuntime) -> None:
    client = sdk(gateway, runtime, **{"x-portkey-aws-bedrock-model": PROVISIONED})
    reply = client.chat.completions.create(model=CUSTOM, messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content
    assert runtime.calls[-1].model_id == PROVISIONED


def test_custom_model_without_deployment_is_a_clear_400(
    gateway: Gateway, runtime: FakeBedrockRuntime
) -> None:
    before = len(runtime.calls)
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(gateway, runtime).chat.completions.create(
            model=CUSTOM, messages=[{"role": "user", "content": "hi"}]
        )
    assert "provisioned throughput" in str(caught.value)
    assert len(runtime.calls) == before


def test_unsupported_parameter_names_it(gateway: Gateway, runtime: FakeBedrockRuntime) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(gateway, runtime).chat.completions.create(
            model=PROVISIONED, messages=[{"role": "user", "content": "hi"}], n=2
        )
    assert caught.value.body["param"] == "n"  # type: ignore[index]
