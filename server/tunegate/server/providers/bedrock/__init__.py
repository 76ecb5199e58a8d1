"""AWS Bedrock provider. `_convert` holds the base-model family table and the training-data
converter (OpenAI chat JSONL → the family's format)."""

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

__all__ = [
    "ConversionError",
    "Converter",
    "Family",
    "UnknownModel",
    "aconvert_chunks",
    "convert_chunks",
    "family_for",
    "require_method",
]
