"""Typed, cached access to the custom options declared in ``tunegate/v1/options.proto``.

Every accessor is a pure function of a descriptor and is memoised: descriptors are immutable
and live as long as the process, so the codec pays the option lookup once per type.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import cast

from google.api import field_behavior_pb2
from google.protobuf.descriptor import (
    Descriptor,
    EnumDescriptor,
    EnumValueDescriptor,
    FieldDescriptor,
    MethodDescriptor,
)
from google.protobuf.message import Message
from tunegate.v1 import options_pb2

__all__ = [
    "auto_or_number_fields",
    "descriptor_of",
    "enum_by_wire",
    "enum_of",
    "field_named",
    "fields_of",
    "from_header",
    "header_fields",
    "input_of",
    "is_map",
    "is_nullable",
    "is_required",
    "json_schema",
    "map_fields",
    "message_of",
    "multipart_part",
    "object_type",
    "oneof_name",
    "output_of",
    "unwrap_field",
    "wire_name",
]


@functools.cache
def object_type(message: Descriptor) -> str:
    """The ``(object_type)`` discriminator of a message, or ``""``."""
    return str(message.GetOptions().Extensions[options_pb2.object_type])


@functools.cache
def auto_or_number_fields(message: Descriptor) -> tuple[FieldDescriptor, FieldDescriptor] | None:
    """For an ``(auto_or_number)`` message: its ``(bool auto, number value)`` oneof members.

    Returns None for other messages. Raises ValueError when the option sits on a message that
    is not ``oneof { bool <auto>; <number> <value>; }`` — a contract bug, found at first use.
    """
    if not message.GetOptions().Extensions[options_pb2.auto_or_number]:
        return None
    fields = fields_of(message)
    auto = [f for f in fields if f.type == FieldDescriptor.TYPE_BOOL]
    numbers = [f for f in fields if f.type not in (FieldDescriptor.TYPE_BOOL, FieldDescriptor.TYPE_MESSAGE)]
    if len(fields) != 2 or len(auto) != 1 or len(numbers) != 1 or auto[0].containing_oneof is None:
        raise ValueError(
            f"{message.full_name}: (auto_or_number) needs oneof {{ bool auto; <number> value; }}"
        )
    return auto[0], numbers[0]


@functools.cache
def unwrap_field(message: Descriptor) -> FieldDescriptor | None:
    """For an ``(unwrap)`` message: the one field it renders as (a map or a repeated field)."""
    name = str(message.GetOptions().Extensions[options_pb2.unwrap])
    if not name:
        return None
    field = field_named(message, name)
    if field is None or not field.is_repeated:
        raise ValueError(f"{message.full_name}: (unwrap) = {name!r} must name a map or repeated field")
    return field


def is_map(field: FieldDescriptor) -> bool:
    """Whether ``field`` is a protobuf map (a repeated synthetic ``*Entry`` message)."""
    return bool(
        field.is_repeated
        and field.type == FieldDescriptor.TYPE_MESSAGE
        and message_of(field).GetOptions().map_entry
    )


@functools.cache
def is_nullable(field: FieldDescriptor) -> bool:
    """Whether an unset ``field`` renders as ``null`` (rather than being omitted)."""
    return bool(field.GetOptions().Extensions[options_pb2.nullable])


@functools.cache
def is_required(field: FieldDescriptor) -> bool:
    """Whether a request must set ``field`` (``google.api.field_behavior = REQUIRED``)."""
    behaviors = field.GetOptions().Extensions[field_behavior_pb2.field_behavior]
    return field_behavior_pb2.FieldBehavior.REQUIRED in behaviors


@functools.cache
def json_schema(field: FieldDescriptor) -> str:
    """The ``(json_schema)`` of a pass-through ``HttpBody`` field (JSON text), or ``""``."""
    return str(field.GetOptions().Extensions[options_pb2.json_schema])


@functools.cache
def multipart_part(field: FieldDescriptor) -> str:
    """The multipart part name that carries a ``bytes`` field, or ``""``."""
    return str(field.GetOptions().Extensions[options_pb2.multipart_part])


@functools.cache
def from_header(field: FieldDescriptor) -> str:
    """The (lower-case) HTTP header that fills ``field`` when the body lacks it, or ``""``."""
    return str(field.GetOptions().Extensions[options_pb2.from_header]).lower()


@functools.cache
def header_fields(message: Descriptor) -> tuple[tuple[str, str], ...]:
    """``(field name, header)`` of every ``(from_header)`` field of ``message``."""
    return tuple((field.name, from_header(field)) for field in fields_of(message) if from_header(field))


@functools.cache
def wire_name(value: EnumValueDescriptor) -> str:
    """The JSON spelling of an enum value: its ``(wire)`` option, else its proto name."""
    return str(value.GetOptions().Extensions[options_pb2.wire]) or value.name


@functools.cache
def enum_by_wire(enum: EnumDescriptor) -> Mapping[str, int]:
    """Wire spelling → number for every non-zero value (the zero value is never on the wire)."""
    return {wire_name(v): v.number for v in enum.values if v.number != 0}


def descriptor_of(message: Message | type[Message]) -> Descriptor:
    """The descriptor of a message or message class (typed for mypy, whatever the backend)."""
    return cast(Descriptor, message.DESCRIPTOR)


def input_of(method: MethodDescriptor) -> Descriptor:
    """A method's request message type."""
    if method.input_type is None:
        raise TypeError(f"{method.full_name} has no input type")
    return method.input_type


def output_of(method: MethodDescriptor) -> Descriptor:
    """A method's response message type."""
    if method.output_type is None:
        raise TypeError(f"{method.full_name} has no output type")
    return method.output_type


@functools.cache
def fields_of(message: Descriptor) -> tuple[FieldDescriptor, ...]:
    """The fields of ``message`` in declaration order (typed for mypy, whatever the backend)."""
    return tuple(cast(Iterable[FieldDescriptor], message.fields))


def field_named(message: Descriptor, name: str) -> FieldDescriptor | None:
    """The field called ``name`` in ``message``, or None."""
    return message.fields_by_name.get(name)


def message_of(field: FieldDescriptor) -> Descriptor:
    """The message type of a message (or map) field."""
    message = field.message_type
    if message is None:
        raise TypeError(f"{field.full_name} is not a message field")
    return message


def enum_of(field: FieldDescriptor) -> EnumDescriptor:
    """The enum type of an enum field."""
    enum = field.enum_type
    if enum is None:
        raise TypeError(f"{field.full_name} is not an enum field")
    return enum


def oneof_name(field: FieldDescriptor) -> str:
    """The name of the oneof ``field`` belongs to."""
    oneof = field.containing_oneof
    if oneof is None:
        raise TypeError(f"{field.full_name} is not in a oneof")
    return oneof.name


def map_fields(field: FieldDescriptor) -> tuple[FieldDescriptor, FieldDescriptor]:
    """The ``(key, value)`` fields of a map field's entry type."""
    entry = message_of(field)
    key, value = field_named(entry, "key"), field_named(entry, "value")
    if key is None or value is None:
        raise TypeError(f"{field.full_name} is not a map field")
    return key, value
