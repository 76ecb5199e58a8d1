"""`tunegate.v1.Models`: proto ⇄ `tunegate.server.models.ModelService`, nothing else."""

from __future__ import annotations

from tunegate.server.models import ModelService
from tunegate.server.servicers._wire import Context, call_metadata, caller
from tunegate.v1 import models_pb2, models_pb2_grpc


class ModelsServicer(models_pb2_grpc.ModelsServicer):
    """Serves `/tunegate.v1.Models/*` from a `ModelService`."""

    def __init__(self, models: ModelService) -> None:
        self._models = models

    async def ListModels(
        self, request: models_pb2.ListModelsRequest, context: Context
    ) -> models_pb2.ListModelsResponse:
        return await self._models.list_models(caller(context), metadata=call_metadata(context))

    async def GetModel(self, request: models_pb2.GetModelRequest, context: Context) -> models_pb2.Model:
        return await self._models.get_model(caller(context), request.model, metadata=call_metadata(context))
