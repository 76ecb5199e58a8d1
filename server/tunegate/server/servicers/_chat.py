"""`tunegate.v1.ChatCompletions`: proto ⇄ `tunegate.server.chat.ChatService`, nothing else.

The request becomes OpenAI JSON (`to_openai`); the answer is a stream of `HttpBody` messages,
each carrying the service's chunks as they are produced (`application/json` once, or
`text/event-stream` events). Errors raised before the first message (bad request, unknown
model) reach the edge as ordinary statuses, hence as OpenAI's JSON errors.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from google.api import httpbody_pb2
from tunegate.openai_json import to_openai
from tunegate.server.chat import ChatService
from tunegate.server.servicers._wire import Context, caller
from tunegate.v1 import chat_pb2, chat_pb2_grpc


class ChatCompletionsServicer(chat_pb2_grpc.ChatCompletionsServicer):
    """Serves `/tunegate.v1.ChatCompletions/*` from a `ChatService`."""

    def __init__(self, chat: ChatService) -> None:
        self._chat = chat

    async def CreateChatCompletion(
        self, request: chat_pb2.CreateChatCompletionRequest, context: Context
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        answer = await self._chat.create(caller(context), to_openai(request))
        async for data in answer.chunks:
            yield httpbody_pb2.HttpBody(content_type=answer.content_type, data=data)
