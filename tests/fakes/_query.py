"""Query-string checking against OpenAPI ``parameters`` lists (OpenAI spec, or Azure ones copied
into the same shape).

Rules: a parameter the operation does not declare, a repeated parameter, a value that does not
coerce to the declared type or fails its schema, and a ``limit`` below 1 are all contract
violations (400 + ``fake.violations``). ``style: deepObject`` parameters arrive as
``name[key]=value`` and come back as a dict (``name=null`` as ``None``, per providers.md §1.2).
"""

from __future__ import annotations

import re
from typing import Any

import jsonschema

from tests.fakes._common import ApiError

__all__ = ["check_query"]

_DEEP = re.compile(r"(?P<name>[A-Za-z_][\w-]*)\[(?P<key>[^\]]+)\]")


def check_query(query: list[tuple[str, str]], parameters: list[dict[str, Any]]) -> dict[str, Any]:
    """The declared query parameters, coerced and validated; raises :class:`ApiError`."""
    declared = {p["name"]: p for p in parameters if p.get("in") == "query"}
    out: dict[str, Any] = {}
    for key, raw in query:
        match = _DEEP.fullmatch(key)
        if match and declared.get(match["name"], {}).get("style") == "deepObject":
            bucket = out.setdefault(match["name"], {})
            if not isinstance(bucket, dict) or match["key"] in bucket:
                raise _bad(key, f"Repeated or conflicting query parameter '{key}'.")
            bucket[match["key"]] = raw
            continue
        if key not in declared:
            raise _bad(key, f"Unrecognized query parameter: '{key}'.")
        if key in out:
            raise _bad(key, f"Query parameter '{key}' given more than once.")
        spec = declared[key]
        if spec.get("style") == "deepObject" and raw == "null":
            out[key] = None
            continue
        value = _coerce(key, raw, spec.get("schema", {}))
        errors = sorted(jsonschema.Draft202012Validator(spec.get("schema", {})).iter_errors(value), key=str)
        if errors:
            raise _bad(key, f"Invalid value for '{key}': {errors[0].message}.")
        out[key] = value
    for name, spec in declared.items():
        if spec.get("required") and name not in out:
            raise _bad(name, f"Missing required query parameter '{name}'.")
    if "limit" in out and out["limit"] < 1:
        raise _bad("limit", "Invalid value for 'limit': must be a positive integer.")
    return out


def _coerce(key: str, raw: str, schema: dict[str, Any]) -> Any:
    kind = schema.get("type")
    if kind == "integer":
        if not re.fullmatch(r"-?\d+", raw):
            raise _bad(key, f"Invalid value for '{key}': expected an integer, got '{raw}'.")
        return int(raw)
    if kind == "boolean":
        if raw not in ("true", "false"):
            raise _bad(key, f"Invalid value for '{key}': expected true or false.")
        return raw == "true"
    return raw


def _bad(param: str, message: str) -> ApiError:
    return ApiError(400, message, param=param, violation=True)
