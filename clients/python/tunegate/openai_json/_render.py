"""Rendering messages as OpenAI JSON (``to_openai``), from a plan made once per message type.

The rules (see ``_codec``'s docstring) are decided once per message type: which fields, in
which order, whether each one is always written, written when present, written as ``null`` when
absent, or left out, and how its value converts (nested messages, enum spellings, bytes). A
message is then rendered by walking that plan — no descriptor or option lookup per value.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from tunegate.openai_json import _options as opts

__all__ = ["EXACT_INT_LIMIT", "JSON_WKT", "always_written", "plain_json", "render_message", "to_openai"]

_FD = FieldDescriptor
JSON_WKT = frozenset({"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"})
# Largest magnitude at which every integer is exactly a double: beyond it a float is not an int.
EXACT_INT_LIMIT = 2**53

_Render = Callable[[Any], Any]
_Convert = Callable[[Any], Any] | None  # None: the Python value is already the JSON value

# How a field of a plain message is written (see `_field_step`).
_PLAIN = 0  # scalars without presence: always written, as they are
_ALWAYS = 1  # repeated fields and maps: always written, converted
_IF_SET = 2  # fields with presence: written when set, else `null` (nullable) or left out
_ENUM = 3  # enums: the zero value counts as unset
_AUTO = 4  # `(auto_or_number)` messages: unset or holding neither member has no JSON value


def to_openai(message: Message) -> dict[str, Any]:
    """Render ``message`` as the OpenAI JSON object it stands for.

    Raises TypeError if the message renders as something other than an object (a bare
    ``(unwrap)`` list or an ``(auto_or_number)`` value is only meaningful inside a parent).
    """
    rendered = render_message(message)
    if not isinstance(rendered, dict):
        raise TypeError(f"{opts.descriptor_of(message).full_name} does not render as a JSON object")
    return rendered


def render_message(message: Message) -> Any:
    """The JSON value of any message (an object, or a bare value for auto/unwrap types)."""
    return _renderer(opts.descriptor_of(message))(message)


def plain_json(value: Any) -> Any:
    """Struct-derived JSON with integral doubles turned back into ints (``3.0`` → ``3``)."""
    if isinstance(value, float):
        if value.is_integer() and abs(value) <= EXACT_INT_LIMIT:
            return int(value)
        return value
    if isinstance(value, dict):
        return {k: plain_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_json(v) for v in value]
    return value


_renderers: dict[Descriptor, _Render] = {}
_building: set[Descriptor] = set()


def _renderer(desc: Descriptor) -> _Render:
    """The (cached) renderer of one message type."""
    render = _renderers.get(desc)
    if render is None:
        _building.add(desc)
        try:
            render = _renderers[desc] = _plan(desc)
        finally:
            _building.discard(desc)
    return render


def _nested(desc: Descriptor) -> _Render:
    """The renderer a field of type ``desc`` calls: looked up at call time only for a type that
    contains itself (its own renderer is still being planned)."""
    if desc in _building:
        return lambda message: _renderer(desc)(message)
    return _renderer(desc)


def _plan(desc: Descriptor) -> _Render:
    if desc.full_name in JSON_WKT:
        return lambda message: plain_json(json_format.MessageToDict(message))
    if desc.file.package == "google.protobuf":
        return lambda message: json_format.MessageToDict(message, preserving_proto_field_name=True)
    auto = opts.auto_or_number_fields(desc)
    if auto is not None:
        return _auto_or_number(opts.oneof_name(auto[0]), auto[0].name, auto[1].name)
    inner = opts.unwrap_field(desc)
    if inner is not None:
        convert = _value_converter(inner)
        assert convert is not None  # a map or a repeated field always converts
        name = inner.name
        return lambda message: convert(getattr(message, name))
    return _object(opts.object_type(desc), tuple(_field_step(field) for field in opts.fields_of(desc)))


def _auto_or_number(oneof: str, auto_name: str, number_name: str) -> _Render:
    def render(message: Any) -> Any:
        which = message.WhichOneof(oneof)
        if which is None:
            return None
        if which == auto_name:
            return "auto"
        return getattr(message, number_name)

    return render


def _object(object_type: str, steps: tuple[tuple[str, int, _Convert, bool], ...]) -> _Render:
    def render(message: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"object": object_type} if object_type else {}
        for name, how, convert, nullable in steps:
            if how == _PLAIN:
                out[name] = getattr(message, name)
            elif how == _ALWAYS:
                out[name] = convert(getattr(message, name))  # type: ignore[misc]  # always converts
            elif how == _IF_SET:
                if message.HasField(name):
                    value = getattr(message, name)
                    out[name] = value if convert is None else convert(value)
                elif nullable:
                    out[name] = None
            elif how == _ENUM:
                value = getattr(message, name)
                if value:
                    out[name] = convert(value)  # type: ignore[misc]  # enums always convert
                elif nullable:
                    out[name] = None
            else:  # _AUTO
                value = convert(getattr(message, name))  # type: ignore[misc]
                if value is not None or nullable:
                    out[name] = value
        return out

    return render


def always_written(field: FieldDescriptor) -> bool:
    """Whether ``field``'s key is in every rendering of its message, whatever its value (fields
    without presence, lists, maps); the others are written when set, else ``null`` or nothing."""
    return _field_step(field)[1] in (_PLAIN, _ALWAYS)


def _field_step(field: FieldDescriptor) -> tuple[str, int, _Convert, bool]:
    """``(name, how, convert, nullable)``: how ``field`` is written into its object."""
    convert = _value_converter(field)
    if field.is_repeated:
        how = _ALWAYS
    elif field.type == _FD.TYPE_ENUM:
        how = _ENUM
    elif field.type == _FD.TYPE_MESSAGE and opts.auto_or_number_fields(opts.message_of(field)):
        how = _AUTO
    elif field.has_presence:
        how = _IF_SET
    else:
        how = _PLAIN if convert is None else _ALWAYS
    return field.name, how, convert, opts.is_nullable(field)


def _value_converter(field: FieldDescriptor) -> _Convert:
    """Converts the field's Python value (a container for maps and repeated fields)."""
    if opts.is_map(field):
        key_field, value_field = opts.map_fields(field)
        item = _scalar_converter(value_field)
        if key_field.type == _FD.TYPE_STRING:
            if item is None:
                return dict
            return lambda entries: {k: item(v) for k, v in entries.items()}
        if item is None:
            return lambda entries: {_map_key_json(k): v for k, v in entries.items()}
        return lambda entries: {_map_key_json(k): item(v) for k, v in entries.items()}
    scalar = _scalar_converter(field)
    if field.is_repeated:
        if scalar is None:
            return list
        return lambda items: [scalar(x) for x in items]
    return scalar


def _scalar_converter(field: FieldDescriptor) -> _Convert:
    kind = field.type
    if kind == _FD.TYPE_MESSAGE:
        return _nested(opts.message_of(field))
    if kind == _FD.TYPE_ENUM:
        # An unknown number (a newer peer) renders as itself.
        wires = {value.number: opts.wire_name(value) for value in opts.enum_of(field).values}
        return lambda number: wires.get(number, number)
    if kind == _FD.TYPE_BYTES:
        return _b64
    # Strings, bools, ints and floats come out of protobuf as the right Python type already.
    return None


def _map_key_json(key: Any) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")
