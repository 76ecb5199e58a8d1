"""Azure OpenAI dated-API (``2024-10-21``) schemas, transcribed as JSON Schema.

Source: ``Azure/azure-rest-api-specs``
``specification/cognitiveservices/data-plane/AzureOpenAI/authoring/stable/2024-10-21/azureopenai.json``
(commit ``3ecc209``; providers.md §4.1), definitions ``FineTuningJobCreation``, ``FineTuningJob``,
``FineTuningHyperParameters``, ``FineTuningJobError``, ``FineTuningJobEvent``,
``FineTuningJobCheckpoint``, the three list wrappers, ``File``, ``FileList``, ``FileDelete``,
``ErrorResponse`` and the enums they use. The spec is Swagger 2.0: properties are *not*
nullable, so ``null`` is rejected (the service omits absent fields; a gateway must omit them too).

Choices of the fake, stricter than the spec says outright (each from providers.md §4.1):
``additionalProperties: false`` on the create body and its ``hyperparameters`` (unknown keys such
as ``metadata``/``method`` are rejected on this API version); ``suffix`` ≤ 40 chars of
``[A-Za-z0-9_-]`` (the spec's prose); ``model`` without ``.`` (Azure model ids are dot-free);
and ``additionalProperties: false`` on responses, so the fake cannot leak OpenAI-only fields
(``organization_id``, ``metadata``, ``method``) into dated-API objects.
"""

from __future__ import annotations

from typing import Any

import jsonschema

__all__ = ["API_VERSION", "DATED_CREATE_FIELDS", "ERROR_CODES", "FILE_PURPOSES", "check"]

API_VERSION = "2024-10-21"
INT32 = {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1}
ERROR_CODES = [
    *("conflict", "invalidPayload", "forbidden", "notFound", "unexpectedEntityState", "itemDoesAlreadyExist"),
    *("serviceUnavailable", "internalFailure", "quotaExceeded", "jsonlValidationFailed", "fileImportFailed"),
    *("tooManyRequests", "unauthorized", "contentFilter"),
]
FILE_PURPOSES = ("fine-tune", "fine-tune-results", "assistants", "assistants_output", "batch")  # Files_Upload
_PURPOSE = {"enum": [*FILE_PURPOSES, "batch_output"]}  # definitions/Purpose
_FILE_STATE = {"enum": ["uploaded", "pending", "running", "processed", "error", "deleting", "deleted"]}
_HYPER = {
    "type": "object",
    "properties": {
        "n_epochs": INT32,
        "batch_size": INT32,
        "learning_rate_multiplier": {"type": "number"},
    },
}

_DEFS: dict[str, dict[str, Any]] = {
    "FineTuningJobCreation": {
        "type": "object",
        "required": ["model", "training_file"],
        "additionalProperties": False,
        "properties": {
            "model": {"type": "string", "minLength": 1, "pattern": r"^[^.]+$"},
            "training_file": {"type": "string", "minLength": 1},
            "validation_file": {"type": "string"},
            "hyperparameters": {**_HYPER, "additionalProperties": False},
            "suffix": {"type": "string", "maxLength": 40, "pattern": r"^[A-Za-z0-9_-]*$"},
            "seed": INT32,
        },
    },
    "FineTuningJob": {
        "type": "object",
        "required": ["model", "training_file"],
        "additionalProperties": False,
        "properties": {
            "object": {"const": "fine_tuning.job"},
            "created_at": {"type": "integer"},
            "id": {"type": "string"},
            "status": {"enum": ["created", "pending", "running", "succeeded", "cancelled", "failed"]},
            "model": {"type": "string", "minLength": 1},
            "fine_tuned_model": {"type": "string"},
            "training_file": {"type": "string", "minLength": 1},
            "validation_file": {"type": "string"},
            "result_files": {"type": "array", "items": {"type": "string"}},
            "finished_at": INT32,
            "organisation_id": {"type": "string"},
            "trained_tokens": INT32,
            "error": {
                "type": "object",
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "param": {"type": "string"},
                },
            },
            "estimated_finish": INT32,
            "hyperparameters": _HYPER,
            "suffix": {"type": "string"},
            "seed": INT32,
        },
    },
    "FineTuningJobEvent": {
        "type": "object",
        "required": ["created_at", "level", "message", "type"],
        "additionalProperties": False,
        "properties": {
            "object": {"const": "fine_tuning.job.event"},
            "id": {"type": "string"},
            "created_at": {"type": "integer"},
            "level": {"enum": ["info", "warning", "error"]},
            "message": {"type": "string", "minLength": 1},
            "type": {"enum": ["message", "metrics"]},
            "data": {},
        },
    },
    "FineTuningJobCheckpoint": {
        "type": "object",
        "required": [
            "created_at",
            "fine_tuned_model_checkpoint",
            "fine_tuning_job_id",
            "metrics",
            "step_number",
        ],
        "additionalProperties": False,
        "properties": {
            "object": {"const": "fine_tuning.job.checkpoint"},
            "id": {"type": "string"},
            "created_at": {"type": "integer"},
            "fine_tuned_model_checkpoint": {"type": "string", "minLength": 1},
            "step_number": INT32,
            "metrics": {"type": "object", "additionalProperties": {"type": "number"}},
            "fine_tuning_job_id": {"type": "string", "minLength": 1},
        },
    },
    "File": {
        "type": "object",
        "required": ["filename", "purpose"],
        "additionalProperties": False,
        "properties": {
            "object": {"const": "file"},
            "created_at": {"type": "integer"},
            "id": {"type": "string"},
            "status": _FILE_STATE,
            "bytes": {"type": "integer"},
            "purpose": _PURPOSE,
            "filename": {"type": "string", "minLength": 1},
            "status_details": {"type": "string"},
        },
    },
    "FileDelete": {
        "type": "object",
        "required": ["deleted", "id"],
        "additionalProperties": False,
        "properties": {"object": {"const": "file"}, "deleted": {"type": "boolean"}, "id": {"type": "string"}},
    },
    "ErrorResponse": {
        "type": "object",
        "required": ["error"],
        "additionalProperties": False,
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"enum": ERROR_CODES},
                    "message": {"type": "string", "minLength": 1},
                    "target": {"type": "string"},
                    "details": {"type": "array"},
                    "innererror": {"type": "object"},
                },
            }
        },
    },
}


def _list_of(item: str, *, has_more: bool = True) -> dict[str, Any]:
    props: dict[str, Any] = {"object": {"const": "list"}, "data": {"type": "array", "items": _DEFS[item]}}
    if has_more:
        props["has_more"] = {"type": "boolean"}
    return {"type": "object", "additionalProperties": False, "properties": props}


_DEFS["FineTuningJobList"] = _list_of("FineTuningJob")
_DEFS["FineTuningJobEventList"] = _list_of("FineTuningJobEvent")
_DEFS["FineTuningJobCheckpointList"] = _list_of("FineTuningJobCheckpoint")
_DEFS["FileList"] = _list_of("File", has_more=False)

DATED_CREATE_FIELDS = frozenset(_DEFS["FineTuningJobCreation"]["properties"])


def check(name: str, instance: Any) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``instance`` fits the dated-API definition ``name``."""
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(_DEFS[name]).iter_errors(instance)
    )
    if error is not None:
        raise error
