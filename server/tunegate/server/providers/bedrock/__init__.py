"""AWS Bedrock provider (`BedrockProvider`, in `_provider`). `_convert` holds the base-model
family table and the training-data converter (OpenAI chat JSONL → the family's format), `_s3`
the S3/STS plumbing and streamed uploads, `_jobs` the job translations, `_converse` chat."""

from __future__ import annotations

from tunegate.server.providers.bedrock._convert import (
    ConversionError,
    Converter,
    Family,
    UnknownModel,
    aconvert_chunks,
    convert_chunks,
    family_for,
    require_method,
)
from tunegate.server.providers.bedrock._provider import BedrockProvider, BedrockSettings

__all__ = [
    "BedrockProvider",
    "BedrockSettings",
    "ConversionError",
    "Converter",
    "Family",
    "UnknownModel",
    "aconvert_chunks",
    "convert_chunks",
    "family_for",
    "require_method",
]
