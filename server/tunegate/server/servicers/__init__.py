"""gRPC servicers: translate proto messages to domain calls and back, and nothing else."""

from __future__ import annotations

from tunegate.server.servicers._admin import ApiKeysServicer, VirtualKeysServicer
from tunegate.server.servicers._chat import ChatCompletionsServicer
from tunegate.server.servicers._files import FilesServicer
from tunegate.server.servicers._fine_tuning import FineTuningServicer
from tunegate.server.servicers._models import ModelsServicer
from tunegate.server.servicers._uploads import UploadsServicer
from tunegate.server.servicers._webhooks import WebhookEndpointsServicer

__all__ = [
    "ApiKeysServicer",
    "ChatCompletionsServicer",
    "FilesServicer",
    "FineTuningServicer",
    "ModelsServicer",
    "UploadsServicer",
    "VirtualKeysServicer",
    "WebhookEndpointsServicer",
]
