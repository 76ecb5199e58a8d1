"""`tunegate.v1.ChatCompletions`: the caller's JSON to the model's server, the answer's bytes back.

Both RPCs take the same request — the envelope (`model`, `stream`) around the caller's JSON
document — and differ only in how the answer travels: `CreateChatCompletion` answers one
`HttpBody` (the whole `chat.completion` document), `StreamChatCompletion` one `HttpBody` per
piece of the provider's server-sent events, relayed as they arrive.

Who answers: the call's metadata resolves to an account (`Router.resolve`, as for jobs). No
provider named, or `local`: the gateway's own `ChatService`; another provider: its adapter's
`chat` when it has `Capability.CHAT`, else `unsupported`. The body is checked here only as far as
routing and the envelope need — a JSON object, nested at most `MAX_JSON_DEPTH` levels below each
top-level key, a string `model` equal to the envelope's, a `stream` agreeing with the RPC — and
reaches a provider as the bytes the caller sent.

Errors raised before the first message (bad request, unknown model, the provider's own 4xx)
reach the caller as ordinary statuses; one raised while a stream is relayed ends the call with
its status after the messages already sent. A caller that cancels the call closes the reply's
chunk iterator (`_closing`, an `aclosing`), which cancels the provider's request or stops the local
generation.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
from google.api import httpbody_pb2
from tunegate.openai_json import MAX_JSON_DEPTH, too_deep_param
from tunegate.server.chat import ChatService
from tunegate.server.errors import InvalidArgument
from tunegate.server.jobs import AccountRouter, ProviderLookup
from tunegate.server.jobs._backends import capabilities
from tunegate.server.providers.interface import Capability, ChatProvider, ChatReply, unsupported
from tunegate.server.servicers._wire import Context, call_metadata, caller
from tunegate.v1 import chat_pb2, chat_pb2_grpc

__all__ = ["ChatCompletionsServicer", "check_body"]

_LOCAL = "local"


def check_body(data: bytes, *, model: str, stream: bool) -> dict[str, Any]:
    """The request document of `data`, checked against the envelope (`model`, possibly empty,
    and the RPC's `stream`). Raises `InvalidArgument` naming the parameter at fault."""
    try:
        document = orjson.loads(data) if data.strip() else {}
    except orjson.JSONDecodeError:
        raise InvalidArgument(
            "We could not parse the JSON body of your request. The body must be a JSON object.",
            code="invalid_json",
        ) from None
    if not isinstance(document, dict):
        raise InvalidArgument("The request body must be a JSON object.", code="invalid_json")
    deep = too_deep_param(document)
    if deep is not None:
        raise InvalidArgument(
            f"Invalid value for '{deep}': objects and arrays may be nested at most "
            f"{MAX_JSON_DEPTH} levels deep.",
            code="invalid_value",
            param=deep,
        )
    named = document.get("model")
    if not isinstance(named, str) or not named:
        if named is None:
            raise InvalidArgument(
                "Missing required parameter: 'model'.", code="missing_required_parameter", param="model"
            )
        raise InvalidArgument("model must be a non-empty string.", code="invalid_type", param="model")
    if model and model != named:
        raise InvalidArgument(
            f"The request's model '{model}' differs from the body's model '{named}'.",
            code="invalid_value",
            param="model",
        )
    asked = document.get("stream")
    if asked is not None and not isinstance(asked, bool):
        raise InvalidArgument("stream must be a boolean.", code="invalid_type", param="stream")
    if bool(asked) != stream:
        rpc = "StreamChatCompletion" if asked else "CreateChatCompletion"
        raise InvalidArgument(
            f"The body's stream is {str(bool(asked)).lower()}: call {rpc} for it.",
            code="invalid_value",
            param="stream",
        )
    return document


@contextlib.asynccontextmanager
async def _closing(chunks: AsyncIterator[bytes]) -> AsyncIterator[AsyncIterator[bytes]]:
    """`contextlib.aclosing` for a reply's chunks: closed however the block ends (a cancelled
    call closes the provider's response, or stops the local generation)."""
    try:
        yield chunks
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()


class ChatCompletionsServicer(chat_pb2_grpc.ChatCompletionsServicer):
    """Serves `/tunegate.v1.ChatCompletions/*`: the local `ChatService` or a provider's `chat`."""

    def __init__(self, chat: ChatService, router: AccountRouter, providers: ProviderLookup) -> None:
        self._chat = chat
        self._router = router
        self._providers = providers

    async def CreateChatCompletion(
        self, request: chat_pb2.CreateChatCompletionRequest, context: Context
    ) -> httpbody_pb2.HttpBody:
        reply = await self._reply(request, context, stream=False)
        async with _closing(reply.chunks) as chunks:
            data = b"".join([chunk async for chunk in chunks])
        return httpbody_pb2.HttpBody(content_type=reply.content_type, data=data)

    async def StreamChatCompletion(
        self, request: chat_pb2.CreateChatCompletionRequest, context: Context
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        reply = await self._reply(request, context, stream=True)
        async with _closing(reply.chunks) as chunks:
            async for chunk in chunks:
                if chunk:
                    yield httpbody_pb2.HttpBody(content_type=reply.content_type, data=chunk)

    async def _reply(
        self, request: chat_pb2.CreateChatCompletionRequest, context: Context, *, stream: bool
    ) -> ChatReply:
        if request.stream != stream:
            raise InvalidArgument(
                f"stream is {str(request.stream).lower()}, but {'Stream' if stream else 'Create'}"
                f"ChatCompletion answers stream={str(stream).lower()}.",
                code="invalid_value",
                param="stream",
            )
        data = request.body.data
        document = check_body(data, model=request.model, stream=stream)
        metadata: Mapping[str, str] = call_metadata(context)
        account = self._router.resolve(metadata)
        if account is None or account.provider == _LOCAL:
            return await self._chat.create(caller(context), document)
        provider = self._providers.get(account.provider)
        if Capability.CHAT not in capabilities(provider, account):
            raise unsupported(provider.name, "chat completions")
        chat: ChatProvider = provider  # type: ignore[assignment]  # CHAT promises ChatProvider
        return await chat.chat(account, data, model=document["model"], stream=stream)
