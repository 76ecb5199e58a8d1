"""A validator for the JSON schemas of a Google API discovery document (``tests/oracles/``).

Discovery schemas are a JSON-Schema dialect: ``type`` (``object``, ``array``, ``string``,
``integer``, ``number``, ``boolean``, ``any``), ``format`` (``int32``, ``int64`` — a string in
JSON —, ``float``, ``byte`` — base64 —, ``google-datetime`` …), ``$ref`` to another schema by
id, ``properties``, ``additionalProperties`` (a map), ``items``, ``enum`` and ``readOnly``
("Output only"). They mark almost nothing ``required``; the descriptions say it instead, and
this validator reads a description starting with ``Required.`` as required.

:func:`validate` checks a value against a named schema strictly: a key the schema does not
declare is an error (proto3 JSON parsers also accept the field's snake_case name; a gateway
sending it is still refused here, so requests stay in the documented spelling), and in a
``request`` a property that is ``readOnly`` or a ``Required.`` property that is missing is an
error too. It returns every error found, each with its JSON path.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any, Literal

__all__ = ["DiscoveryDocument", "aiplatform_v1", "validate"]

ORACLES = Path(__file__).resolve().parents[1] / "oracles"
_INT_RANGES = {
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}
_DATETIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)")
_DURATION = re.compile(r"-?\d+(\.\d{1,9})?s")

Direction = Literal["request", "response"]


class DiscoveryDocument:
    """A parsed discovery document: its ``schemas`` by id, plus :meth:`validate`."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self.document = document
        self.schemas: Mapping[str, Mapping[str, Any]] = document["schemas"]

    def schema(self, name: str) -> Mapping[str, Any]:
        return self.schemas[name]

    def validate(self, value: Any, name: str, *, direction: Direction = "request") -> list[str]:
        """Every way ``value`` breaks the schema ``name`` (empty when it fits)."""
        errors: list[str] = []
        self._check(value, {"$ref": name}, "$", direction, errors)
        return errors

    def _check(
        self, value: Any, schema: Mapping[str, Any], where: str, direction: Direction, errors: list[str]
    ) -> None:
        ref = schema.get("$ref")
        if ref is not None:
            if ref not in self.schemas:
                errors.append(f"{where}: the document has no schema {ref!r}")
                return
            schema = self.schemas[ref]
        kind = schema.get("type")
        if kind == "any" or (kind is None and "properties" not in schema):
            return
        if kind == "object" or kind is None:
            self._object(value, schema, where, direction, errors)
        elif kind == "array":
            if not isinstance(value, list):
                errors.append(f"{where}: expected an array, got {_json_type(value)}")
                return
            for i, item in enumerate(value):
                self._check(item, schema.get("items", {}), f"{where}[{i}]", direction, errors)
        elif kind == "string":
            self._string(value, schema, where, errors)
        elif kind == "integer":
            if not (isinstance(value, int) and not isinstance(value, bool)):
                errors.append(f"{where}: expected an integer, got {_json_type(value)}")
                return
            low, high = _INT_RANGES.get(schema.get("format", "int32"), _INT_RANGES["int32"])
            if not low <= value <= high:
                errors.append(f"{where}: {value} is out of the range of {schema.get('format', 'int32')}")
        elif kind == "number":
            if not (isinstance(value, int | float) and not isinstance(value, bool)):
                errors.append(f"{where}: expected a number, got {_json_type(value)}")
        elif kind == "boolean":
            if not isinstance(value, bool):
                errors.append(f"{where}: expected a boolean, got {_json_type(value)}")
        else:
            errors.append(f"{where}: the schema has an unknown type {kind!r}")

    def _object(
        self, value: Any, schema: Mapping[str, Any], where: str, direction: Direction, errors: list[str]
    ) -> None:
        if not isinstance(value, dict):
            errors.append(f"{where}: expected an object, got {_json_type(value)}")
            return
        properties: Mapping[str, Any] = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            at = f"{where}.{key}"
            if key in properties:
                prop = properties[key]
                if direction == "request" and prop.get("readOnly"):
                    errors.append(f"{at}: an output-only field in a request")
                    continue
                self._check(item, prop, at, direction, errors)
            elif extra is not None:
                self._check(item, extra, at, direction, errors)
            elif properties:
                errors.append(f"{at}: unknown field (the schema {schema.get('id', '')!r} has no {key!r})")
            # an object schema without properties (e.g. `args`, a Struct) takes any keys
        if direction == "request":
            for key, prop in properties.items():
                required = str(prop.get("description", "")).startswith("Required.")
                if required and key not in value:
                    errors.append(f"{where}.{key}: a required field is missing")

    @staticmethod
    def _string(value: Any, schema: Mapping[str, Any], where: str, errors: list[str]) -> None:
        if not isinstance(value, str):
            errors.append(f"{where}: expected a string, got {_json_type(value)}")
            return
        enum = schema.get("enum")
        if enum is not None and value not in enum:
            errors.append(f"{where}: {value!r} is not one of {enum}")
        fmt = schema.get("format")
        if fmt in _INT_RANGES:
            low, high = _INT_RANGES[fmt]
            if not re.fullmatch(r"-?\d+", value) or not low <= int(value) <= high:
                errors.append(f"{where}: {value!r} is not an {fmt}")
        elif fmt == "byte":
            try:
                base64.b64decode(value.replace("-", "+").replace("_", "/"), validate=True)
            except (binascii.Error, ValueError):
                errors.append(f"{where}: {value!r} is not base64")
        elif fmt == "google-datetime" and not _DATETIME.fullmatch(value):
            errors.append(f"{where}: {value!r} is not an RFC 3339 timestamp")
        elif fmt == "google-duration" and not _DURATION.fullmatch(value):
            errors.append(f"{where}: {value!r} is not a duration such as '3.5s'")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object" if isinstance(value, dict) else type(value).__name__


@cache
def aiplatform_v1() -> DiscoveryDocument:
    """Vertex AI's ``aiplatform.v1`` discovery document (``tests/oracles/aiplatform.v1.json.gz``)."""
    with gzip.open(ORACLES / "aiplatform.v1.json.gz", "rt", encoding="utf-8") as file:
        return DiscoveryDocument(json.load(file))


def validate(value: Any, name: str, *, direction: Direction = "request") -> list[str]:
    """:meth:`DiscoveryDocument.validate` against ``aiplatform.v1``'s schema ``name``
    (``GoogleCloudAiplatformV1GenerateContentRequest`` …)."""
    return aiplatform_v1().validate(value, name, direction=direction)
