"""What the JSON and text parsers share: the codec's error and the checks of scalar values."""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from tunegate.openai_json import _options as opts

__all__ = [
    "FLOAT_TYPES",
    "INT_RANGES",
    "MAX_JSON_DEPTH",
    "CodecError",
    "check_range",
    "coerce_text",
    "decode_base64",
    "enum_number",
    "is_number",
    "json_type",
    "nested_deeper_than",
    "out_of_range",
    "too_deep_field",
    "too_deep_param",
    "type_error",
    "unknown_enum",
]

MAX_JSON_DEPTH = 32
"""The deepest nesting of objects and arrays an open-ended JSON value (`Struct`, `Value`,
`ListValue` fields: `portkey_options`, `method.reinforcement.grader`, …) may have. Inside a
message each JSON level is three protobuf levels (Struct, map entry, Value), and protobuf refuses
to decode a message nested more than 100 levels deep: 32 JSON levels is the most the deepest
open-ended field (`method.reinforcement.grader`) can carry and still cross gRPC."""


def nested_deeper_than(value: Any, limit: int) -> bool:
    """Whether the JSON `value` nests objects/arrays more than `limit` levels deep (a scalar is
    level 0, `{}` level 1). Iterative: a value of any depth is measured without recursion."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth + 1 > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def too_deep_param(document: Mapping[str, Any], limit: int = MAX_JSON_DEPTH) -> str | None:
    """Where a JSON object passed through as a whole (a chat request) nests too deep: the
    parameter (``messages[0].content``) of the first top-level value nesting more than `limit`
    levels, or None. The parameter runs to the innermost object key on the way down (at most
    four keys), with the array indexes between them. Iterative, like `nested_deeper_than`."""
    stack: list[tuple[Any, int, str, str, int]] = [(v, 0, str(k), "", 1) for k, v in document.items()]
    while stack:
        item, depth, param, pending, keys = stack.pop()
        if isinstance(item, dict):
            if depth + 1 > limit:
                return param
            for key, child in item.items():
                if keys < 4:
                    stack.append((child, depth + 1, f"{param}{pending}.{key}", "", keys + 1))
                else:
                    stack.append((child, depth + 1, param, pending, keys))
        elif isinstance(item, list | tuple):
            if depth + 1 > limit:
                return param
            for index, child in enumerate(item):
                stack.append((child, depth + 1, param, f"{pending}[{index}]" if keys < 4 else pending, keys))
    return None


_OPEN_ENDED = frozenset({"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"})


def too_deep_field(message: Message, limit: int = MAX_JSON_DEPTH) -> str | None:
    """The path (``method.reinforcement.grader``) of the first open-ended field of `message`
    whose JSON nests deeper than `limit`, or None. For messages that did not come from JSON (a
    gRPC caller's): the JSON parser applies the same limit as it reads."""
    stack: list[tuple[Message, str]] = [(message, "")]
    while stack:
        current, prefix = stack.pop()
        for field, value in current.ListFields():
            kind = field.message_type
            if kind is None:
                continue
            path = prefix + field.name
            if kind.GetOptions().map_entry:
                value_field = kind.fields_by_name["value"]
                if value_field.message_type is None:
                    continue
                items: list[Message] = list(value.values())
            else:
                items = list(value) if field.is_repeated else [value]
            for item in items:
                if kind.full_name in _OPEN_ENDED or item.DESCRIPTOR.full_name in _OPEN_ENDED:
                    if nested_deeper_than(json_format.MessageToDict(item), limit):
                        return path
                else:
                    stack.append((item, path + "."))
    return None


_FD = FieldDescriptor
INT_RANGES: dict[int, tuple[int, int]] = {
    _FD.TYPE_INT32: (-(2**31), 2**31 - 1),
    _FD.TYPE_SINT32: (-(2**31), 2**31 - 1),
    _FD.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    _FD.TYPE_INT64: (-(2**63), 2**63 - 1),
    _FD.TYPE_SINT64: (-(2**63), 2**63 - 1),
    _FD.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    _FD.TYPE_UINT32: (0, 2**32 - 1),
    _FD.TYPE_FIXED32: (0, 2**32 - 1),
    _FD.TYPE_UINT64: (0, 2**64 - 1),
    _FD.TYPE_FIXED64: (0, 2**64 - 1),
}
FLOAT_TYPES = frozenset({_FD.TYPE_FLOAT, _FD.TYPE_DOUBLE})


class CodecError(ValueError):
    """A request value does not fit the contract; ``param`` names it (OpenAI's ``param``)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def __repr__(self) -> str:
        return f"CodecError({self.message!r}, param={self.param!r})"


def enum_number(field: FieldDescriptor, wire: str, path: str) -> int:
    """The number of an enum field's wire spelling; CodecError naming ``path`` if unknown."""
    number = opts.enum_by_wire(opts.enum_of(field)).get(wire)
    if number is None:
        raise unknown_enum(field, wire, path)
    return number


def unknown_enum(field: FieldDescriptor, wire: str, path: str) -> CodecError:
    """The error for a spelling that is not one of the enum's."""
    choices = ", ".join(f"'{w}'" for w in opts.enum_by_wire(opts.enum_of(field)))
    return CodecError(f"Invalid value for '{path}': '{wire}' is not one of {choices}.", path)


def check_range(kind: int, value: int, path: str) -> int:
    """``value`` if it fits the integer type ``kind``; CodecError naming ``path`` if not."""
    low, high = INT_RANGES[kind]
    if not low <= value <= high:
        raise out_of_range(path, value)
    return value


def out_of_range(path: str, value: int) -> CodecError:
    """The error for an integer its field's type cannot hold."""
    return CodecError(f"Invalid value for '{path}': {value} is out of range.", path)


def decode_base64(value: Any, path: str) -> bytes:
    """A ``bytes`` field's value from its JSON (or text) form: standard base64."""
    if not isinstance(value, str):
        raise type_error(path, "a base64 string", value)
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        raise CodecError(f"Invalid value for '{path}': expected base64.", path) from None


def is_number(value: Any) -> bool:
    """A JSON number (a bool is not one, although Python's bool is an int)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def type_error(path: str, expected: str, value: Any) -> CodecError:
    """The error for a JSON value of the wrong type at ``path``."""
    return CodecError(
        f"Invalid type for '{path}': expected {expected}, but got {json_type(value)} instead.", path
    )


def json_type(value: Any) -> str:
    """``value``'s JSON type, with its article (``an integer``), for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def coerce_text(field: FieldDescriptor, text: str, param: str) -> Any:
    """A scalar field's value from text (a query parameter, a form field, a path variable or a
    map key), by field type; CodecError naming ``param`` when the text does not fit."""
    kind = field.type
    if kind in INT_RANGES:
        try:
            number = int(text.strip(), 10)
        except ValueError:
            raise CodecError(
                f"Invalid value for '{param}': expected an integer, but got '{text}'.", param
            ) from None
        return check_range(kind, number, param)
    if kind in FLOAT_TYPES:
        try:
            real = float(text)
        except ValueError:
            raise CodecError(
                f"Invalid value for '{param}': expected a number, but got '{text}'.", param
            ) from None
        if not math.isfinite(real):
            raise CodecError(f"Invalid value for '{param}': expected a finite number.", param)
        return real
    if kind == _FD.TYPE_BOOL:
        lowered = text.lower()
        if lowered not in ("true", "false", "1", "0"):
            raise CodecError(f"Invalid value for '{param}': expected 'true' or 'false'.", param)
        return lowered in ("true", "1")
    if kind == _FD.TYPE_ENUM:
        return enum_number(field, text, param)
    if kind == _FD.TYPE_BYTES:
        return decode_base64(text, param)
    if kind == _FD.TYPE_STRING:
        return text
    raise CodecError(f"'{param}' cannot be given as text.", param)
