"""Helpers for the job tests."""

from __future__ import annotations

from typing import Any

from tunegate.openai_json import from_openai, to_openai
from tunegate.v1 import files_pb2_grpc
from tunegate.v1 import fine_tuning_pb2 as ft

from tests.server.support import Metadata, create_file

# Alice's owner scope is her gateway key (`x-portkey-api-key`), whatever provider credential
# she sends, so calls with and without her OpenAI key see the same jobs.
ALICE_TENANT: Metadata = (("x-portkey-api-key", "pk-alice"),)
ALICE: Metadata = (*ALICE_TENANT, ("x-portkey-provider", "openai"), ("authorization", "Bearer sk-alice"))
ALICE_BARE: Metadata = (*ALICE_TENANT, ("authorization", "Bearer sk-alice"))  # no provider named
BOB: Metadata = (("x-portkey-provider", "openai"), ("authorization", "Bearer sk-bob"))
TEAM: Metadata = (("x-portkey-virtual-key", "team"),)
NATIVE_FILE = "file-native-training"  # not a gateway id: passed through to the provider
TRAINING = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n' * 10


def create_request(**fields: Any) -> ft.CreateFineTuningJobRequest:
    body = {"model": "gpt-4o-mini", "training_file": NATIVE_FILE, **fields}
    return from_openai(body, ft.CreateFineTuningJobRequest)


def as_json(message: Any) -> dict[str, Any]:
    return to_openai(message)


async def upload(files: files_pb2_grpc.FilesAsyncStub, md: Metadata = ALICE, **kwargs: Any) -> str:
    created = await create_file(files, TRAINING, md=md, **kwargs)
    return created.id
