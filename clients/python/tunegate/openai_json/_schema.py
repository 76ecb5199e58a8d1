"""JSON Schema (2020-12, the dialect of OpenAPI 3.1) of messages as this codec writes and reads them.

Sans-IO: descriptors in, plain JSON values out. The rules are the codec's own, read from the same
options (and, for what is written, from the renderer's own plan, ``_render._field_step``), so the
schema cannot describe a JSON the codec does not produce:

* keys are proto field names; every integer, int64 included, is a JSON ``integer``; ``bytes`` are
  base64 strings; an enum is a string of its ``(wire)`` spellings (never the zero value);
  ``(auto_or_number)`` is ``"auto"`` or the number; ``(unwrap)`` is the inner map or list;
  ``Struct`` / ``Value`` / ``ListValue`` are open JSON.
* **Output** (``to_openai``): ``"object"`` is a required constant where ``(object_type)`` says so;
  a key the codec always writes (fields without presence, lists, maps) is required; a
  ``(nullable)`` field is required and may be ``null``; other fields with presence are optional;
  a field marked ``google.api.field_behavior = REQUIRED`` is required (on a message the server
  answers with, one it always sets). Unknown keys are allowed, so a client tolerates fields
  added later.
* **Input** (``from_openai``): unknown keys are refused (``additionalProperties: false``); a
  REQUIRED field is required; every other key may also be ``null``, which leaves it unset.
* **Text** (``from_query``, ``apply_form_field``): a query or form field has its value's schema
  (coerced from text by field type); a map or a nested message is ``name[key]=value``
  (``style: deepObject``), a repeated scalar repeats its name; ``name=null`` on an ``(unwrap)``
  map sets it present and empty.

A message type described in both directions has two components: its output shape under its own
name and its input shape as ``<Name>Input``.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Iterable
from typing import Any

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from tunegate.openai_json import _options as opts
from tunegate.openai_json._render import JSON_WKT, always_written

__all__ = ["COMPONENTS", "Direction", "SchemaSet", "message_types", "nullable"]

COMPONENTS = "#/components/schemas/"
_FD = FieldDescriptor
_HTTP_BODY = "google.api.HttpBody"
_INT32 = frozenset({_FD.TYPE_INT32, _FD.TYPE_SINT32, _FD.TYPE_SFIXED32})
_INT64 = frozenset({_FD.TYPE_INT64, _FD.TYPE_SINT64, _FD.TYPE_SFIXED64})
_UNSIGNED = {_FD.TYPE_UINT32: 2**32 - 1, _FD.TYPE_FIXED32: 2**32 - 1, _FD.TYPE_UINT64: 2**64 - 1}
_UNSIGNED[_FD.TYPE_FIXED64] = 2**64 - 1


class Direction(enum.Enum):
    """Which way a message crosses the codec."""

    INPUT = "input"
    """Parsed from a request (``from_openai``, ``from_query``, form fields)."""
    OUTPUT = "output"
    """Rendered into an answer (``to_openai``)."""


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` or ``null``."""
    kind = schema.get("type")
    if isinstance(kind, str) and "enum" not in schema:
        return {**schema, "type": [kind, "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def message_types(roots: Iterable[Descriptor]) -> set[str]:
    """Full names of the message types that get a component when ``roots`` are described:
    the roots and every message reachable from them, but for the types that render inline
    (``(auto_or_number)``, ``(unwrap)`` — whose inner messages do count —, ``google.protobuf``,
    ``google.api.HttpBody``)."""
    found: set[str] = set()
    stack = list(roots)
    while stack:
        desc = stack.pop()
        if _inline(desc):
            inner = opts.unwrap_field(desc)
            if inner is not None:
                stack.extend(_field_messages(inner))
            continue
        if desc.full_name in found:
            continue
        found.add(desc.full_name)
        for field in opts.fields_of(desc):
            stack.extend(_field_messages(field))
    return found


def _field_messages(field: FieldDescriptor) -> list[Descriptor]:
    if opts.is_map(field):
        field = opts.map_fields(field)[1]
    return [opts.message_of(field)] if field.type == _FD.TYPE_MESSAGE else []


def _inline(desc: Descriptor) -> bool:
    return (
        desc.file.package == "google.protobuf"
        or desc.full_name == _HTTP_BODY
        or opts.auto_or_number_fields(desc) is not None
        or opts.unwrap_field(desc) is not None
    )


class SchemaSet:
    """Schemas of messages and fields, with the component schemas they refer to.

    ``both``: full names of the message types described in both directions (their input shape
    is named ``<Name>Input``; see `message_types`). ``describe``: a descriptor's full name → its
    documentation (proto comments), ``""`` when it has none.
    """

    def __init__(self, *, both: Iterable[str] = (), describe: Callable[[str], str] | None = None) -> None:
        self._both = frozenset(both)
        self._describe = describe or (lambda _name: "")
        self._components: dict[str, dict[str, Any]] = {}
        self._owners: dict[str, tuple[str, Direction | None, frozenset[str]]] = {}

    @property
    def components(self) -> dict[str, dict[str, Any]]:
        """The component schemas referred to so far, by name."""
        return dict(sorted(self._components.items()))

    def describe(self, full_name: str) -> str:
        """The documentation of a descriptor (``""`` when it has none)."""
        return self._describe(full_name)

    # ---------------------------------------------------------------------------- JSON bodies

    def message(self, desc: Descriptor, direction: Direction, *, omit: Iterable[str] = ()) -> dict[str, Any]:
        """The schema of a message-typed value: a ``$ref`` to its component, or the inline
        schema of a type that renders as something else than an object. ``omit`` leaves fields
        out of the component (a request body's fields bound by the path)."""
        if _inline(desc):
            return self._inline_message(desc, direction)
        name = desc.name + ("Input" if direction is Direction.INPUT and desc.full_name in self._both else "")
        owner = (desc.full_name, direction, frozenset(omit))
        if self._owners.setdefault(name, owner) != owner:
            raise ValueError(f"two schemas would be named {name!r}: {self._owners[name]} and {owner}")
        if name not in self._components:
            self._components[name] = {}  # a placeholder while a type that contains itself is built
            self._components[name] = self._object(desc, direction, frozenset(omit))
        return {"$ref": COMPONENTS + name}

    def field(self, field: FieldDescriptor, direction: Direction) -> dict[str, Any]:
        """The schema of a field's JSON value (a list for a repeated field, an object for a map),
        without its documentation and without ``null``."""
        if opts.is_map(field):
            key, value = opts.map_fields(field)
            schema: dict[str, Any] = {"type": "object", "additionalProperties": self._value(value, direction)}
            if key.type == _FD.TYPE_BOOL:
                schema["propertyNames"] = {"enum": ["true", "false"]}
            elif key.type != _FD.TYPE_STRING:
                schema["propertyNames"] = {"pattern": "^-?[0-9]+$"}
            return schema
        if field.is_repeated:
            return {"type": "array", "items": self._value(field, direction)}
        return self._value(field, direction)

    def document(self, envelope: Descriptor, body: FieldDescriptor) -> dict[str, Any]:
        """The request document of a pass-through route: an object whose keys named like the
        envelope's other fields fill them (input rules), merged with the body field's
        ``(json_schema)``; any other key is allowed (it travels as sent)."""
        extra: dict[str, Any] = json.loads(opts.json_schema(body) or "{}")
        required = list(extra.get("required", ()))
        properties: dict[str, Any] = {}
        for field in opts.fields_of(envelope):
            if field is not body:
                value = self.field(field, Direction.INPUT)
                properties[field.name] = self._documented(
                    value if field.name in required else nullable(value), field.full_name
                )
        properties.update(extra.pop("properties", {}))
        schema: dict[str, Any] = {"type": "object", "properties": properties}
        if required:
            schema["required"] = required
        schema.update({key: value for key, value in extra.items() if key != "required"})
        schema["additionalProperties"] = True
        return self._documented(schema, body.full_name)

    # ---------------------------------------------------------------------------- text fields

    def text(self, field: FieldDescriptor) -> tuple[dict[str, Any], dict[str, Any]]:
        """A query parameter's or form field's ``(schema, serialization)``: the value's schema
        and, for what is not a plain value, its OpenAPI ``style`` and ``explode``."""
        if field.type == _FD.TYPE_MESSAGE and not field.is_repeated:
            desc = opts.message_of(field)
            schema = self.message(desc, Direction.INPUT)
            if opts.auto_or_number_fields(desc) is not None:
                return schema, {}
            if opts.unwrap_field(desc) is not None:
                schema = nullable(schema)  # `name=null`: present and empty
            return schema, {"style": "deepObject", "explode": True}
        schema = self.field(field, Direction.INPUT)
        if opts.is_map(field):
            return schema, {"style": "deepObject", "explode": True}
        if field.is_repeated:
            return schema, {"style": "form", "explode": True}
        return schema, {}

    def form(
        self, metadata: Descriptor, *, part: str, omit: Iterable[str] = ()
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """A ``multipart/form-data`` body's ``(schema, encoding)``: the metadata message's
        fields as text fields (but ``omit``), and ``part``, the binary part, which is required."""
        properties: dict[str, Any] = {}
        required: list[str] = []
        encoding: dict[str, Any] = {}
        skipped = set(omit)
        for field in opts.fields_of(metadata):
            if field.name in skipped:
                continue
            schema, serialization = self.text(field)
            properties[field.name] = self._documented(schema, field.full_name)
            if serialization.get("style") == "deepObject":
                encoding[field.name] = serialization
            if opts.is_required(field):
                required.append(field.name)
        properties[part] = {"type": "string", "format": "binary", "description": "The file's bytes."}
        required.append(part)
        schema = {"type": "object", "properties": properties, "required": required}
        schema["additionalProperties"] = False
        return schema, encoding

    # ---------------------------------------------------------------------------- the rules

    def _object(self, desc: Descriptor, direction: Direction, omit: frozenset[str]) -> dict[str, Any]:
        properties: dict[str, Any] = {}
        required: list[str] = []
        object_type = opts.object_type(desc)
        if object_type:
            constant = {"type": "string", "enum": [object_type]}
            properties["object"] = constant if direction is Direction.OUTPUT else nullable(constant)
            if direction is Direction.OUTPUT:
                required.append("object")
        for field in opts.fields_of(desc):
            if field.name in omit:
                continue
            schema = self.field(field, direction)
            if direction is Direction.OUTPUT:
                always, null = always_written(field), opts.is_nullable(field)
                if null and not always:
                    schema = nullable(schema)
                if always or null or opts.is_required(field):
                    required.append(field.name)
            elif opts.is_required(field):
                required.append(field.name)
            else:
                schema = nullable(schema)
            properties[field.name] = self._documented(schema, field.full_name)
        schema = {"type": "object", "properties": properties}
        if required:
            schema["required"] = required
        if direction is Direction.INPUT:
            schema["additionalProperties"] = False
        return self._documented(schema, desc.full_name)

    def _value(self, field: FieldDescriptor, direction: Direction) -> dict[str, Any]:
        """The schema of one value of a field (an item of a list, a value of a map)."""
        kind = field.type
        if kind == _FD.TYPE_MESSAGE:
            return self.message(opts.message_of(field), direction)
        if kind == _FD.TYPE_ENUM:
            return self._enum(opts.enum_of(field))
        return _scalar(kind)

    def _enum(self, desc: EnumDescriptor) -> dict[str, Any]:
        name = desc.name
        owner = (desc.full_name, None, frozenset[str]())
        if self._owners.setdefault(name, owner) != owner:
            raise ValueError(f"two schemas would be named {name!r}: {self._owners[name]} and {owner}")
        if name not in self._components:
            schema = {"type": "string", "enum": list(opts.enum_by_wire(desc))}
            self._components[name] = self._documented(schema, desc.full_name)
        return {"$ref": COMPONENTS + name}

    def _inline_message(self, desc: Descriptor, direction: Direction) -> dict[str, Any]:
        auto = opts.auto_or_number_fields(desc)
        if auto is not None:
            return {"oneOf": [{"type": "string", "enum": ["auto"]}, _scalar(auto[1].type)]}
        inner = opts.unwrap_field(desc)
        if inner is not None:
            return self.field(inner, direction)
        if desc.full_name in JSON_WKT:
            return {
                "google.protobuf.Struct": {"type": "object"},
                "google.protobuf.ListValue": {"type": "array"},
                "google.protobuf.Value": {},
            }[desc.full_name]
        # Timestamp, Duration, wrappers, HttpBody, …: no field of the contract has one today.
        raise ValueError(f"{desc.full_name}: the codec's JSON for this type has no schema here")

    def _documented(self, schema: dict[str, Any], full_name: str) -> dict[str, Any]:
        text = self._describe(full_name)
        return {**schema, "description": text} if text else schema


def _scalar(kind: int) -> dict[str, Any]:
    if kind == _FD.TYPE_STRING:
        return {"type": "string"}
    if kind == _FD.TYPE_BOOL:
        return {"type": "boolean"}
    if kind in _INT32:
        return {"type": "integer", "format": "int32"}
    if kind in _INT64:
        return {"type": "integer", "format": "int64"}
    if kind in _UNSIGNED:
        return {"type": "integer", "minimum": 0, "maximum": _UNSIGNED[kind]}
    if kind == _FD.TYPE_DOUBLE:
        return {"type": "number", "format": "double"}
    if kind == _FD.TYPE_FLOAT:
        return {"type": "number", "format": "float"}
    if kind == _FD.TYPE_BYTES:
        return {"type": "string", "contentEncoding": "base64"}
    raise ValueError(f"no JSON schema for field type {kind}")
