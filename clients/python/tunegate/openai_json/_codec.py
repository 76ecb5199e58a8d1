"""Proto ⇄ OpenAI JSON, driven by descriptors and the custom options of ``options.proto``.

Sans-IO: pure functions over messages and plain JSON values (dicts, lists, str, int, float,
bool, None), no aiohttp, no grpc.

Rendering (``to_openai``), per ``options.proto``'s header:

* keys are proto field names, in declaration order; ``(object_type)`` adds ``"object"`` first;
* every integer, int64 included, is a JSON int; floats stay floats; bytes are base64;
* an unset field with presence is ``null`` when ``(nullable)``, else omitted; fields without
  presence always render (``[]``, ``""``, ``false``, ``0``);
* an enum renders as its ``(wire)`` spelling; the zero value counts as unset (``null`` when
  nullable, else omitted — a required key cannot be ``null`` in OpenAI's schemas);
* ``(auto_or_number)`` → ``"auto"`` or the number; ``(unwrap)`` → the inner map/list;
* ``Struct``/``Value``/``ListValue`` → plain JSON, integral numbers as ints.

Parsing is strict, like OpenAI's own validation: an unknown key or a wrong JSON type raises
``CodecError`` whose ``param`` is the dotted path of the offending value
(``method.supervised.hyperparameters.n_epochs``, list items as ``integrations[0]``). ``null``
leaves a field unset. Query strings and multipart text fields (``from_query``,
``apply_form_field``) are text and are coerced by field type; ``name[key]`` addresses a map
entry or a nested field.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Mapping
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from tunegate.openai_json import _options as opts
from tunegate.openai_json._build import FLOAT_TYPES, INT_RANGES, Unusual, builder, json_builder
from tunegate.openai_json._render import Rendered, to_openai

__all__ = [
    "CodecError",
    "Rendered",
    "apply_form_field",
    "apply_headers",
    "apply_path_params",
    "from_openai",
    "from_query",
    "rendered",
    "to_openai",
]

M = TypeVar("M", bound=Message)

_FD = FieldDescriptor
_STRUCT = "google.protobuf.Struct"
_VALUE = "google.protobuf.Value"
_LIST_VALUE = "google.protobuf.ListValue"
# `name`, `name[key]`, `name[a][b]` — the bracket syntax of OpenAI forms and query filters.
_BRACKETS = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)((?:\[[^\[\]]*\])*)")


class CodecError(ValueError):
    """A request value does not fit the contract; ``param`` names it (OpenAI's ``param``)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def __repr__(self) -> str:
        return f"CodecError({self.message!r}, param={self.param!r})"


# --------------------------------------------------------------------------------------------
# Parsing JSON bodies
# --------------------------------------------------------------------------------------------


def from_openai(
    data: Any,
    message_cls: type[M],
    *,
    path_params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    lenient: bool = False,
) -> M:
    """Parse an OpenAI JSON request body strictly into a new ``message_cls``.

    ``path_params`` (text, already percent-decoded) then override body fields of the same name;
    ``headers`` (case-insensitive or lower-cased keys) fill ``(from_header)`` fields the body
    left empty. Raises CodecError naming the offending ``param``.

    ``lenient`` drops keys the contract does not have, at any depth, instead of rejecting them:
    for objects a provider answers with, which gain fields over time. Types are still checked.
    """
    if not isinstance(data, dict):
        raise CodecError(f"The request body must be a JSON object, not {_json_type(data)}.")
    try:
        message = message_cls(**builder(opts.descriptor_of(message_cls), not lenient)(data))
    except (Unusual, TypeError, ValueError):  # the general parser decides, and names the param
        message = message_cls()
        _parse_object(message, data, "", not lenient)
    if path_params:
        apply_path_params(message, path_params)
    if headers is not None:
        apply_headers(message, headers)
    return message


def rendered(data: Mapping[str, Any], message_cls: type[Message]) -> Rendered:
    """``data`` (OpenAI JSON, read leniently) as ``to_openai(from_openai(data, message_cls,
    lenient=True))`` renders it — computed from the JSON without building the message when the
    JSON is plainly well-typed. Raises CodecError exactly as that parse would."""
    try:
        return Rendered(message_cls, json_builder(opts.descriptor_of(message_cls))(data))
    except Unusual:
        return Rendered(message_cls, to_openai(from_openai(data, message_cls, lenient=True)))


def apply_path_params(message: Message, path_params: Mapping[str, str]) -> None:
    """Set top-level fields from URL path variables, coercing the text by field type."""
    for name, text in path_params.items():
        field = opts.field_named(opts.descriptor_of(message), name)
        if field is None:
            raise CodecError(f"Unrecognized path parameter: {name}", name)
        _set_text(message, field, text, name)


def apply_headers(message: Message, headers: Mapping[str, str]) -> None:
    """Fill top-level ``(from_header)`` string fields that are still empty from ``headers``."""
    for name, header in opts.header_fields(opts.descriptor_of(message)):
        if not getattr(message, name):
            value = headers.get(header)
            if value:
                setattr(message, name, value)


# The general parser: what `_build`'s fast path finds unusual comes here. It accepts the
# odd-but-valid and names the `param` of anything invalid; it walks the body in key order, so
# the first offending key is the one reported. `strict=False` skips unknown keys instead.
def _parse_object(message: Message, data: Mapping[str, Any], prefix: str, strict: bool = True) -> None:
    desc = opts.descriptor_of(message)
    oneofs_seen: dict[str, str] = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else key
        field = opts.field_named(desc, key)
        if field is None:
            if not strict or (
                key == "object" and opts.object_type(desc) and value in (None, opts.object_type(desc))
            ):
                continue  # echoing the constant discriminator back is harmless
            raise CodecError(f"Unrecognized request argument supplied: {path}", path)
        if value is None:
            continue
        oneof = field.containing_oneof
        if oneof is not None:
            other = oneofs_seen.setdefault(oneof.name, key)
            if other != key:
                raise CodecError(f"'{path}' cannot be combined with '{other}'.", path)
        _parse_field(message, field, value, path, strict)


def _parse_field(
    message: Message, field: FieldDescriptor, value: Any, path: str, strict: bool = True
) -> None:
    if opts.is_map(field):
        if not isinstance(value, dict):
            raise _type_error(path, "an object", value)
        target = getattr(message, field.name)
        key_field, value_field = opts.map_fields(field)
        for key, item in value.items():
            item_path = f"{path}.{key}"
            map_key = _coerce_text(key_field, key, item_path)
            if value_field.type == _FD.TYPE_MESSAGE:
                _parse_message(target[map_key], item, item_path, strict)
            else:
                target[map_key] = _parse_scalar(value_field, item, item_path)
        return
    if field.is_repeated:
        if not isinstance(value, list):
            raise _type_error(path, "an array", value)
        target = getattr(message, field.name)
        for index, item in enumerate(value):
            item_path = f"{path}[{index}]"
            if field.type == _FD.TYPE_MESSAGE:
                _parse_message(target.add(), item, item_path, strict)
            else:
                target.append(_parse_scalar(field, item, item_path))
        return
    if field.type == _FD.TYPE_MESSAGE:
        _parse_message(getattr(message, field.name), value, path, strict)
    else:
        setattr(message, field.name, _parse_scalar(field, value, path))


def _parse_message(message: Message, value: Any, path: str, strict: bool = True) -> None:
    desc = opts.descriptor_of(message)
    auto = opts.auto_or_number_fields(desc)
    if auto is not None:
        auto_field, number_field = auto
        if value == "auto":
            setattr(message, auto_field.name, True)
        elif _is_number(value):
            setattr(message, number_field.name, _parse_scalar(number_field, value, path))
        else:
            expected = '"auto" or an integer' if number_field.type in INT_RANGES else '"auto" or a number'
            raise _type_error(path, expected, value)
        return
    inner = opts.unwrap_field(desc)
    if inner is not None:
        message.SetInParent()
        _parse_field(message, inner, value, path, strict)
        return
    if desc.full_name == _STRUCT and not isinstance(value, dict):
        raise _type_error(path, "an object", value)
    if desc.full_name == _LIST_VALUE and not isinstance(value, list):
        raise _type_error(path, "an array", value)
    if desc.file.package == "google.protobuf":
        message.SetInParent()
        try:
            json_format.ParseDict(value, message)
        except json_format.ParseError as exc:
            raise CodecError(f"Invalid value for '{path}': {exc}", path) from None
        return
    if not isinstance(value, dict):
        raise _type_error(path, "an object", value)
    message.SetInParent()
    _parse_object(message, value, path, strict)


def _parse_scalar(field: FieldDescriptor, value: Any, path: str) -> Any:
    kind = field.type
    if kind == _FD.TYPE_STRING:
        if not isinstance(value, str):
            raise _type_error(path, "a string", value)
        return value
    if kind == _FD.TYPE_BOOL:
        if not isinstance(value, bool):
            raise _type_error(path, "a boolean", value)
        return value
    if kind in INT_RANGES:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise _type_error(path, "an integer", value)
        return _check_range(kind, value, path)
    if kind in FLOAT_TYPES:
        if not _is_number(value):
            raise _type_error(path, "a number", value)
        return float(value)
    if kind == _FD.TYPE_ENUM:
        if not isinstance(value, str):
            raise _type_error(path, "a string", value)
        return _enum_number(field, value, path)
    if kind == _FD.TYPE_BYTES:
        if not isinstance(value, str):
            raise _type_error(path, "a base64 string", value)
        try:
            return base64.b64decode(value, validate=True)
        except binascii.Error:
            raise CodecError(f"Invalid value for '{path}': expected base64.", path) from None
    raise CodecError(f"'{path}' cannot be given as a scalar.", path)


# --------------------------------------------------------------------------------------------
# Parsing text: query strings, multipart form fields, path variables
# --------------------------------------------------------------------------------------------


def from_query(
    query: Mapping[str, str], message_cls: type[M], *, path_params: Mapping[str, str] | None = None
) -> M:
    """Parse a GET/DELETE query string (a multidict: ``items()`` yields repeats) into ``message_cls``.

    Scalars are coerced by field type, enums by wire spelling, ``name[key]=v`` sets a map entry
    (also inside an ``(unwrap)`` message), ``name=null`` on an ``(unwrap)`` message sets it
    present but empty, a repeated scalar takes every occurrence. Unknown parameters are
    ignored, as grpc-gateway does; a known one with a bad value raises CodecError.
    """
    message = message_cls()
    bound = set(path_params or ())
    for key, value in query.items():
        parsed = _BRACKETS.fullmatch(key)
        if parsed is None or parsed.group(1) in bound:
            continue
        _apply_text(message, key, value, strict=False)
    if path_params:
        apply_path_params(message, path_params)
    return message


def apply_form_field(message: Message, name: str, value: str) -> None:
    """Set one multipart text field (``purpose``, ``expires_after[seconds]``, …) on ``message``.

    Unlike the query, an unknown name is an error (OpenAI's form schemas forbid extra fields).
    """
    _apply_text(message, name, value, strict=True)


def _apply_text(message: Message, raw_key: str, text: str, *, strict: bool) -> None:
    parsed = _BRACKETS.fullmatch(raw_key)
    if parsed is None:
        if strict:
            raise CodecError(f"Unrecognized request argument supplied: {raw_key}", raw_key)
        return
    segments = [parsed.group(1), *re.findall(r"\[([^\[\]]*)\]", parsed.group(2))]
    target = message
    for index, segment in enumerate(segments):
        field = opts.field_named(opts.descriptor_of(target), segment)
        if field is None:
            if strict or index > 0:
                raise CodecError(f"Unrecognized request argument supplied: {raw_key}", raw_key)
            return
        rest = segments[index + 1 :]
        map_owner, map_field = target, field
        if field.type == _FD.TYPE_MESSAGE and not field.is_repeated:
            inner = opts.unwrap_field(opts.message_of(field))
            if inner is not None and opts.is_map(inner):
                map_owner, map_field = getattr(target, field.name), inner
        if opts.is_map(map_field):
            if not rest and text == "null" and map_owner is not target:
                map_owner.SetInParent()  # `metadata=null`: present and empty
                return
            if len(rest) != 1:
                raise CodecError(f"'{raw_key}' must be given as '{segment}[<key>]'.", raw_key)
            key_field, value_field = opts.map_fields(map_field)
            map_owner.SetInParent()
            key = _coerce_text(key_field, rest[0], raw_key)
            getattr(map_owner, map_field.name)[key] = _coerce_text(value_field, text, raw_key)
            return
        if not rest:
            _set_text(target, field, text, raw_key)
            return
        if field.type != _FD.TYPE_MESSAGE or field.is_repeated:
            raise CodecError(f"Unrecognized request argument supplied: {raw_key}", raw_key)
        target = getattr(target, field.name)
        target.SetInParent()


def _set_text(message: Message, field: FieldDescriptor, text: str, param: str) -> None:
    if field.is_repeated:
        getattr(message, field.name).append(_coerce_text(field, text, param))
    elif field.type == _FD.TYPE_MESSAGE:
        sub = getattr(message, field.name)
        auto = opts.auto_or_number_fields(opts.message_of(field))
        if auto is None:
            raise CodecError(f"'{param}' cannot be given as text.", param)
        if text == "auto":
            setattr(sub, auto[0].name, True)
        else:
            setattr(sub, auto[1].name, _coerce_text(auto[1], text, param))
    else:
        setattr(message, field.name, _coerce_text(field, text, param))


def _coerce_text(field: FieldDescriptor, text: str, param: str) -> Any:
    kind = field.type
    if kind in INT_RANGES:
        try:
            number = int(text.strip(), 10)
        except ValueError:
            raise CodecError(
                f"Invalid value for '{param}': expected an integer, but got '{text}'.", param
            ) from None
        return _check_range(kind, number, param)
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
        return _enum_number(field, text, param)
    if kind == _FD.TYPE_BYTES:
        return _parse_scalar(field, text, param)
    if kind == _FD.TYPE_STRING:
        return text
    raise CodecError(f"'{param}' cannot be given as text.", param)


# --------------------------------------------------------------------------------------------
# Shared
# --------------------------------------------------------------------------------------------


def _enum_number(field: FieldDescriptor, wire: str, path: str) -> int:
    numbers = opts.enum_by_wire(opts.enum_of(field))
    number = numbers.get(wire)
    if number is None:
        choices = ", ".join(f"'{w}'" for w in numbers)
        raise CodecError(f"Invalid value for '{path}': '{wire}' is not one of {choices}.", path)
    return number


def _check_range(kind: int, value: int, path: str) -> int:
    low, high = INT_RANGES[kind]
    if not low <= value <= high:
        raise CodecError(f"Invalid value for '{path}': {value} is out of range.", path)
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _type_error(path: str, expected: str, value: Any) -> CodecError:
    return CodecError(
        f"Invalid type for '{path}': expected {expected}, but got {_json_type(value)} instead.", path
    )


def _json_type(value: Any) -> str:
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
