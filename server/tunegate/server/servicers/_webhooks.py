"""`tunegate.v1.WebhookEndpoints`: proto ⇄ `tunegate.server.webhooks.WebhookService`, nothing else."""

from __future__ import annotations

from tunegate.server.servicers._wire import Context, caller
from tunegate.server.webhooks import WebhookService
from tunegate.v1 import webhooks_pb2, webhooks_pb2_grpc


class WebhookEndpointsServicer(webhooks_pb2_grpc.WebhookEndpointsServicer):
    """Serves `/tunegate.v1.WebhookEndpoints/*` from a `WebhookService`."""

    def __init__(self, webhooks: WebhookService) -> None:
        self._webhooks = webhooks

    async def CreateWebhookEndpoint(
        self, request: webhooks_pb2.CreateWebhookEndpointRequest, context: Context
    ) -> webhooks_pb2.WebhookEndpoint:
        return await self._webhooks.create(caller(context), request.url, list(request.events))

    async def ListWebhookEndpoints(
        self, request: webhooks_pb2.ListWebhookEndpointsRequest, context: Context
    ) -> webhooks_pb2.ListWebhookEndpointsResponse:
        return await self._webhooks.list(caller(context))

    async def GetWebhookEndpoint(
        self, request: webhooks_pb2.GetWebhookEndpointRequest, context: Context
    ) -> webhooks_pb2.WebhookEndpoint:
        return await self._webhooks.get(caller(context), request.id)

    async def DeleteWebhookEndpoint(
        self, request: webhooks_pb2.DeleteWebhookEndpointRequest, context: Context
    ) -> webhooks_pb2.DeleteWebhookEndpointResponse:
        return await self._webhooks.delete(caller(context), request.id)
