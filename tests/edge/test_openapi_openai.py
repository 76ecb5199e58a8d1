"""The generated OpenAPI document against OpenAI's (``tests/oracles/openai-openapi.yaml``): every
operation the two share — files, uploads, fine-tuning, chat, models — has the same path, method,
parameters, required fields and JSON types, field by field, in requests and in answers.

Each place where they legitimately differ is one entry of ``DIFFERENCES``, with its reason; the
test fails on any difference not listed there *and* on any listed difference that is gone, so
the list stays exactly what is true. One rule applies everywhere and is stated once instead:
the gateway reads ``null`` as "unset" for every optional request key (the codec's rule), so in
requests the types of optional keys are compared without ``null``.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import pytest
from tunegate.edge import served_document

from tests.openapi_schema import spec as openai_spec

_OURS = "ours"
_THEIRS = "theirs"

# Every operation of OpenAI's that the gateway serves, by our operationId → OpenAI's.
SHARED = {
    "createFile": "createFile",
    "listFiles": "listFiles",
    "getFile": "retrieveFile",
    "deleteFile": "deleteFile",
    "getFileContent": "downloadFile",
    "createUpload": "createUpload",
    "addUploadPart": "addUploadPart",
    "completeUpload": "completeUpload",
    "cancelUpload": "cancelUpload",
    "createFineTuningJob": "createFineTuningJob",
    "listFineTuningJobs": "listPaginatedFineTuningJobs",
    "getFineTuningJob": "retrieveFineTuningJob",
    "cancelFineTuningJob": "cancelFineTuningJob",
    "pauseFineTuningJob": "pauseFineTuningJob",
    "resumeFineTuningJob": "resumeFineTuningJob",
    "listFineTuningEvents": "listFineTuningEvents",
    "listFineTuningCheckpoints": "listFineTuningJobCheckpoints",
    "createChatCompletion": "createChatCompletion",
    "listModels": "listModels",
    "getModel": "retrieveModel",
}

_PORTKEY = "a Portkey option of the gateway (provider routing inside the body), not OpenAI's"
_IDEMPOTENCY = (
    "the gateway's idempotency key (AIP-155): the `Idempotency-Key` header, or this field, returns "
    "the first object for a repeated create"
)
_PASSED = "passed to the provider as the caller sent it: the gateway checks only model, messages, stream"
_FILE_PURPOSES = (
    "one FilePurpose enum serves every file message: on a create the server refuses the purposes "
    "only it assigns (400), and answers with `evals` (OpenAI's own create accepts it, its "
    "OpenAIFile enum omits it)"
)
_GRADER = "a grader is kept as free-form JSON (google.protobuf.Struct), checked by the provider"
# Where a fine-tuning job is in each answer that carries one.
_JOB_OPERATIONS = ["createFineTuningJob", "getFineTuningJob", "cancelFineTuningJob"]
_JOB_OPERATIONS += ["pauseFineTuningJob", "resumeFineTuningJob"]
_JOBS = [
    *(f"{op} 200 application/json" for op in _JOB_OPERATIONS),
    "listFineTuningJobs 200 application/json.data[]",
]
# OpenAI's CreateChatCompletionRequest properties the gateway relays without describing them.
_CHAT_PASSED = [
    *("audio", "frequency_penalty", "function_call", "functions", "logit_bias", "logprobs"),
    *("max_completion_tokens", "max_tokens", "metadata", "modalities", "moderation", "n"),
    *("parallel_tool_calls", "prediction", "presence_penalty", "prompt_cache_key"),
    *("prompt_cache_options", "prompt_cache_retention", "reasoning_effort", "response_format"),
    *("safety_identifier", "seed", "service_tier", "stop", "store", "stream_options"),
    *("temperature", "tool_choice", "tools", "top_logprobs", "top_p", "user", "verbosity"),
    "web_search_options",
]

DIFFERENCES: dict[str, str] = {
    # ---- files
    "createFile request multipart/form-data.request_id: only ours": _IDEMPOTENCY,
    "createFile request multipart/form-data.purpose: enum only ours "
    "['assistants_output', 'batch_output', 'fine-tune-results']": _FILE_PURPOSES,
    "createFile parameter header idempotency-key: only ours": _IDEMPOTENCY,
    "listFiles parameter query purpose: enum only ours": "the gateway lists its FilePurpose values; "
    "OpenAI's filter is any string",
    "listFiles parameter query limit: format/type": "same integer; ours says int32",
    "getFile 200 application/json.purpose: enum only ours ['evals']": _FILE_PURPOSES,
    "createFile 200 application/json.purpose: enum only ours ['evals']": _FILE_PURPOSES,
    "getFileContent 200: media types ours ['*/*'] theirs ['application/json']": "the file's bytes, "
    "with the Content-Type it was uploaded with (OpenAI's spec says a JSON string)",
    "listFiles 200 application/json.data[].purpose: enum only ours ['evals']": _FILE_PURPOSES,
    # ---- uploads
    "createUpload request application/json.request_id: only ours": _IDEMPOTENCY,
    "createUpload request application/json.purpose: enum only ours "
    "['assistants_output', 'batch_output', 'fine-tune-results', 'user_data', 'evals']": _FILE_PURPOSES,
    "createUpload parameter header idempotency-key: only ours": _IDEMPOTENCY,
    "createUpload 200 application/json.file.purpose: enum only ours ['evals']": _FILE_PURPOSES,
    "completeUpload 200 application/json.file.purpose: enum only ours ['evals']": _FILE_PURPOSES,
    "cancelUpload 200 application/json.file.purpose: enum only ours ['evals']": _FILE_PURPOSES,
    # ---- fine-tuning
    "createFineTuningJob request application/json.portkey_options: only ours": _PORTKEY,
    "createFineTuningJob request application/json.provider_options: only ours": _PORTKEY,
    "createFineTuningJob request application/json.role_arn: only ours": "Portkey's Bedrock option "
    "in the body (the IAM role the customization job runs as)",
    "createFineTuningJob request application/json.request_id: only ours": _IDEMPOTENCY,
    "createFineTuningJob parameter header idempotency-key: only ours": _IDEMPOTENCY,
    "createFineTuningJob request application/json.method.reinforcement.grader: structure": _GRADER,
    **{
        f"{job}.{difference}": reason
        for job in _JOBS
        for difference, reason in {
            "status: enum only ours ['paused']": "the gateway's jobs can be paused (`POST …/pause`, "
            "OpenAI's own operation); OpenAI's status enum omits the state",
            "user_provided_suffix: only ours": "the suffix the caller gave (OpenAI's API returns it "
            "too; its spec does not list it)",
            "provider: only ours": "the provider that holds the job, as `x-portkey-provider` names "
            "it: the console lists and filters jobs by it",
            "method.reinforcement.grader: structure": _GRADER,
            "method.supervised.hyperparameters.batch_size: types ours ['integer', 'null', 'string'] "
            "theirs ['integer', 'string']": "the contract shares one Hyperparameters message between "
            "the top level (where OpenAI's batch_size is nullable) and the supervised method, so an "
            "unset batch_size is `null` there too, which OpenAI's method schema refuses — a contract "
            "question (a message of the method's own), recorded in tests/openai_json/test_codec_values.py",
        }.items()
    },
    "listFineTuningEvents parameter query stream: only ours": "`stream=true` watches the job "
    "live as server-sent events (the gateway's `WatchFineTuningJob`)",
    "listFineTuningEvents 200: media types ours ['application/json', 'text/event-stream'] "
    "theirs ['application/json']": "as the `stream` parameter",
    "listFineTuningJobs parameter query limit: format/type": "same integer; ours says int32",
    "listFineTuningEvents parameter query limit: format/type": "same integer; ours says int32",
    "listFineTuningCheckpoints parameter query limit: format/type": "same integer; ours says int32",
    # ---- chat
    **{
        f"createChatCompletion request application/json.{name}: passed through": _PASSED
        for name in _CHAT_PASSED
    },
    "createChatCompletion request application/json.messages[]: structure": "each message is "
    "relayed as sent (the provider checks its role and content)",
    "createChatCompletion 200 application/json: structure": "the provider's chat.completion "
    "document, relayed as it sent it (tests/e2e check it against OpenAI's schema)",
    "createChatCompletion 200 text/event-stream: structure": "the provider's chunks, relayed",
    "createChatCompletion 429: only theirs": "every failure, a 429 included, is the `default` "
    "error answer (ErrorResponse)",
    # ---- models
    "listModels 200 application/json.data[].shutdown_date: only theirs": "the gateway does not "
    "know when a model is retired",
    "getModel 200 application/json.shutdown_date: only theirs": "as listModels'",
}


# ------------------------------------------------------------------------------------------ model


@functools.cache
def _ours() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(served_document())
    return document


def _doc(side: str) -> dict[str, Any]:
    return _ours() if side == _OURS else openai_spec()


def _resolve(side: str, schema: Any) -> dict[str, Any]:
    while isinstance(schema, dict) and "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        kind = schema["$ref"].split("/")[2]
        rest = {k: v for k, v in schema.items() if k not in ("$ref", "description")}
        schema = {**_doc(side)["components"][kind][name], **rest}
    return schema if isinstance(schema, dict) else {}


def _types(side: str, schema: Any) -> frozenset[str] | None:
    """The JSON types a schema admits at its top (None: any)."""
    schema = _resolve(side, schema)
    if "const" in schema:
        return frozenset({_json_type(schema["const"])})
    kind = schema.get("type")
    if isinstance(kind, str):
        return frozenset({kind})
    if isinstance(kind, list):
        return frozenset(kind)
    for combinator in ("anyOf", "oneOf"):
        if combinator in schema:
            found: set[str] = set()
            for branch in schema[combinator]:
                branch_types = _types(side, branch)
                if branch_types is None:
                    return None
                found |= branch_types
            return frozenset(found)
    if "allOf" in schema:
        known = [t for t in (_types(side, branch) for branch in schema["allOf"]) if t is not None]
        return frozenset.intersection(*known) if known else None
    if "enum" in schema:
        return frozenset(_json_type(value) for value in schema["enum"])
    if "properties" in schema:
        return frozenset({"object"})
    return None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _branches(side: str, schema: Any) -> list[dict[str, Any]]:
    """The non-null alternatives of a schema (itself, when it has none). An enum beside a plain
    schema of its type (OpenAI's "any string, for instance one of these") is no alternative."""
    schema = _resolve(side, schema)
    for combinator in ("anyOf", "oneOf"):
        if combinator in schema:
            out: list[dict[str, Any]] = []
            for branch in schema[combinator]:
                out += [b for b in _branches(side, branch) if _types(side, b) != frozenset({"null"})]
            plain = [_types(side, b) for b in out if "enum" not in b and "const" not in b]
            return [b for b in out if not (("enum" in b or "const" in b) and _types(side, b) in plain)]
    if "allOf" in schema:
        merged: dict[str, Any] = {}
        for member in schema["allOf"]:
            for branch in _branches(side, member):
                merged.setdefault("properties", {}).update(branch.get("properties", {}))
                merged["required"] = [*merged.get("required", []), *branch.get("required", [])]
                for key in ("type", "items", "enum", "additionalProperties"):
                    if key in branch:
                        merged[key] = branch[key]
        return [merged]
    if isinstance(schema.get("type"), list):
        return [{**schema, "type": next(t for t in schema["type"] if t != "null")}]
    return [schema]


def _enum(side: str, schema: Any) -> list[Any] | None:
    values = [v for b in _branches(side, schema) for v in b.get("enum", [])]
    return values or None


# ---------------------------------------------------------------------------------- comparison


def _compare(where: str, ours: Any, theirs: Any, *, request: bool, optional: bool, out: list[str]) -> None:
    """Append to ``out`` how ``ours`` differs from ``theirs``. A request schema must accept the
    same values as OpenAI's; an answer's must accept no value OpenAI's refuses (it may say more:
    a key always sent, one enum value fewer)."""
    ours_types, theirs_types = _types(_OURS, ours), _types(_THEIRS, theirs)
    if request and optional and ours_types is not None and theirs_types is not None:
        ours_types, theirs_types = ours_types - {"null"}, theirs_types - {"null"}
    if request:
        agree = ours_types == theirs_types
    else:
        agree = theirs_types is None or (ours_types is not None and ours_types <= theirs_types)
    if not agree:
        out.append(
            f"{where}: types ours {sorted(ours_types or ['any'])} theirs {sorted(theirs_types or ['any'])}"
        )
        return
    ours_enum, theirs_enum = _enum(_OURS, ours), _enum(_THEIRS, theirs)
    if ours_enum and theirs_enum:
        only_ours = [v for v in ours_enum if v not in theirs_enum]
        only_theirs = [v for v in theirs_enum if v not in ours_enum]
        if only_ours:
            out.append(f"{where}: enum only ours {only_ours}")
        if only_theirs and request:
            out.append(f"{where}: enum only theirs {only_theirs}")
    elif ours_enum and request:
        out.append(f"{where}: enum only ours")
    elif theirs_enum:
        out.append(f"{where}: enum only theirs")
    ours_branches, theirs_branches = _branches(_OURS, ours), _branches(_THEIRS, theirs)
    if len(ours_branches) != 1 or len(theirs_branches) != 1:
        if len(ours_branches) != len(theirs_branches):
            out.append(f"{where}: structure")
        return
    (mine,), (other,) = ours_branches, theirs_branches
    if "properties" in mine or "properties" in other:
        _compare_objects(where, mine, other, request=request, out=out)
    elif "items" in mine or "items" in other:
        items = (mine.get("items", {}), other.get("items", {}))
        _compare(f"{where}[]", *items, request=request, optional=False, out=out)
    elif isinstance(mine.get("additionalProperties"), dict) and isinstance(
        other.get("additionalProperties"), dict
    ):
        values = (mine["additionalProperties"], other["additionalProperties"])
        _compare(f"{where}{{*}}", *values, request=request, optional=False, out=out)


def _compare_objects(
    where: str, ours: dict[str, Any], theirs: dict[str, Any], *, request: bool, out: list[str]
) -> None:
    if "properties" not in ours or "properties" not in theirs:
        out.append(f"{where}: structure")
        return
    mine, other = ours["properties"], theirs["properties"]
    mine_required, other_required = set(ours.get("required", ())), set(theirs.get("required", ()))
    prefix = f"{where}." if where else ""
    for name in other:
        if name not in mine:
            passes = ours.get("additionalProperties") is True
            out.append(f"{prefix}{name}: passed through" if passes else f"{prefix}{name}: only theirs")
    for name in mine:
        if name not in other:
            out.append(f"{prefix}{name}: only ours")
            continue
        ours_requires, theirs_requires = name in mine_required, name in other_required
        # An answer may always carry a key OpenAI's schema leaves optional.
        if ours_requires != theirs_requires and (request or theirs_requires):
            out.append(f"{prefix}{name}: required ours {ours_requires} theirs {theirs_requires}")
        _compare(
            f"{prefix}{name}", mine[name], other[name], request=request, optional=not ours_requires, out=out
        )


def _parameters(side: str, operation: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    found = {}
    for parameter in operation.get("parameters", []):
        parameter = _resolve(side, parameter)
        found[(parameter["in"], parameter["name"].lower())] = parameter
    return found


def _compare_operation(name: str, ours: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    out: list[str] = []
    mine, other = _parameters(_OURS, ours), _parameters(_THEIRS, theirs)
    for key in sorted(set(mine) | set(other)):
        where = f"{name} parameter {key[0]} {key[1]}"
        if key not in other:
            out.append(f"{where}: only ours")
        elif key not in mine:
            out.append(f"{where}: only theirs")
        else:
            if bool(mine[key].get("required")) != bool(other[key].get("required")):
                out.append(
                    f"{where}: required ours {mine[key].get('required')} theirs {other[key].get('required')}"
                )
            a, b = _resolve(_OURS, mine[key]["schema"]), _resolve(_THEIRS, other[key]["schema"])
            if a.get("format") != b.get("format") and _types(_OURS, a) == _types(_THEIRS, b):
                out.append(f"{where}: format/type")
            _compare(where, a, b, request=True, optional=not mine[key].get("required"), out=out)
    ours_body, theirs_body = ours.get("requestBody"), theirs.get("requestBody")
    if ours_body and theirs_body:
        if ours_body.get("required") != theirs_body.get("required"):
            required = (ours_body.get("required"), theirs_body.get("required"))
            out.append(f"{name} request: required ours {required[0]} theirs {required[1]}")
        _compare_content(
            f"{name} request", ours_body["content"], theirs_body["content"], request=True, out=out
        )
    elif ours_body or theirs_body:
        out.append(f"{name} request: body only {'ours' if ours_body else 'theirs'}")
    for status in sorted(set(ours["responses"]) | set(theirs["responses"])):
        if status == "default":
            continue
        if status not in ours["responses"]:
            out.append(f"{name} {status}: only theirs")
        elif status not in theirs["responses"]:
            out.append(f"{name} {status}: only ours")
        else:
            a = _resolve(_OURS, ours["responses"][status]).get("content", {})
            b = _resolve(_THEIRS, theirs["responses"][status]).get("content", {})
            _compare_content(f"{name} {status}", a, b, request=False, out=out)
    return out


def _compare_content(
    where: str, ours: dict[str, Any], theirs: dict[str, Any], *, request: bool, out: list[str]
) -> None:
    if set(ours) != set(theirs):
        out.append(f"{where}: media types ours {sorted(ours)} theirs {sorted(theirs)}")
    for media in sorted(set(ours) & set(theirs)):
        _compare(
            f"{where} {media}",
            ours[media]["schema"],
            theirs[media]["schema"],
            request=request,
            optional=False,
            out=out,
        )


def _operations(side: str) -> dict[str, tuple[str, str, dict[str, Any]]]:
    found = {}
    for path, item in _doc(side)["paths"].items():
        for method, operation in item.items():
            if isinstance(operation, dict) and "operationId" in operation:
                found[operation["operationId"]] = (path, method, operation)
    return found


# ---------------------------------------------------------------------------------------- tests


def test_every_operation_shared_with_openai_has_its_path_and_method() -> None:
    ours, theirs = _operations(_OURS), _operations(_THEIRS)
    served_by_openai = {
        name
        for name, (path, method, _) in ours.items()
        if any(p == path.removeprefix("/v1") and m == method for p, m, _ in theirs.values())
    }
    assert served_by_openai == set(SHARED)
    for name, openai_name in SHARED.items():
        path, method, _ = ours[name]
        assert (path.removeprefix("/v1"), method) == theirs[openai_name][:2], name


@functools.cache
def _differences() -> tuple[str, ...]:
    ours, theirs = _operations(_OURS), _operations(_THEIRS)
    found: list[str] = []
    for name, openai_name in SHARED.items():
        found += _compare_operation(name, ours[name][2], theirs[openai_name][2])
    mine = _ours()["components"]["schemas"]["ErrorResponse"]
    _compare(
        "ErrorResponse",
        mine,
        {"$ref": "#/components/schemas/ErrorResponse"},
        request=False,
        optional=False,
        out=found,
    )
    return tuple(found)


@pytest.mark.parametrize("operation", sorted(SHARED))
def test_each_shared_operation_agrees_with_openai_but_where_listed(operation: str) -> None:
    found = [d for d in _differences() if d.startswith(f"{operation} ")]
    listed = [d for d in DIFFERENCES if d.startswith(f"{operation} ")]
    unlisted = sorted(set(found) - set(listed))
    gone = sorted(set(listed) - set(found))
    assert not unlisted, "differences from OpenAI's spec that DIFFERENCES does not explain:\n" + "\n".join(
        unlisted
    )
    assert not gone, "DIFFERENCES lists what no longer differs:\n" + "\n".join(gone)


def test_the_error_envelope_is_openais() -> None:
    assert [d for d in _differences() if d.startswith("ErrorResponse")] == []


def test_every_listed_difference_names_a_shared_operation_and_says_why() -> None:
    for difference, reason in DIFFERENCES.items():
        assert difference.split(" ", 1)[0] in SHARED, difference
        assert len(reason) > 10, difference
