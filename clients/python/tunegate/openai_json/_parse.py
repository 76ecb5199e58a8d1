"""Parsing OpenAI JSON into a message (``parse_json``), from a plan made once per message type.

A JSON object becomes the keyword arguments of its message's constructor — nested messages as
nested dicts, ``"auto" | number`` as ``{"auto": True}`` or ``{"value": n}``, enum spellings as
numbers, ``Struct`` fields as the JSON object itself — so that one constructor call builds the
whole tree in protobuf's C code. The checks of each field (its JSON type, range, enum spellings,
oneof members) are decided once per message type and kept in a table by JSON key.

The body is walked in key order, so the first offending key is the one reported. A check that
fails raises `_Misfit`; each level it passes through on the way out adds its key or index, so
the path (``method.supervised.hyperparameters.n_epochs``, ``integrations[0]``) is only built
for an error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from tunegate.openai_json import _options as opts
from tunegate.openai_json._scalars import (
    FLOAT_TYPES,
    INT_RANGES,
    MAX_JSON_DEPTH,
    CodecError,
    coerce_text,
    decode_base64,
    is_number,
    nested_deeper_than,
    out_of_range,
    type_error,
    unknown_enum,
)

__all__ = ["parse_json"]

M = TypeVar("M", bound=Message)
_FD = FieldDescriptor
_STRUCT = "google.protobuf.Struct"
_LIST_VALUE = "google.protobuf.ListValue"
_Convert = Callable[[Any], Any]
_Parse = Callable[[Any], dict[str, Any]]


class _Misfit(Exception):
    """A value that does not fit; ``error(path)`` makes its CodecError once the path is known."""

    def __init__(self, error: Callable[[str], CodecError]) -> None:
        super().__init__()
        self.error = error
        self.where: list[str] = []  # innermost first: `.key` or `[index]`

    def at(self, segment: str) -> _Misfit:
        self.where.append(segment)
        return self

    def path(self) -> str:
        return "".join(reversed(self.where)).removeprefix(".")


def parse_json(data: Any, message_cls: type[M], *, strict: bool) -> M:
    """The ``message_cls`` the JSON object ``data`` stands for. ``strict``: an unknown key is an
    error (else it is dropped, at any depth). Raises CodecError naming the offending param."""
    try:
        kwargs = _object_parser(opts.descriptor_of(message_cls), strict)(data)
    except _Misfit as misfit:
        raise misfit.error(misfit.path()) from None
    try:
        return message_cls(**kwargs)
    except (TypeError, ValueError) as exc:  # only values JSON cannot hold, e.g. a set in a Struct
        raise CodecError(f"Invalid value: {exc}") from None


_parsers: dict[tuple[Descriptor, bool], _Parse] = {}
_building: set[tuple[Descriptor, bool]] = set()


def _object_parser(desc: Descriptor, strict: bool) -> _Parse:
    """The (cached) parser of one message type's JSON object into constructor arguments."""
    key = (desc, strict)
    parse = _parsers.get(key)
    if parse is None:
        if key in _building:  # a type that contains itself: look it up when called
            return lambda data: _object_parser(desc, strict)(data)
        _building.add(key)
        try:
            parse = _parsers[key] = _plan_object(desc, strict)
        finally:
            _building.discard(key)
    return parse


# A field's step: its name, its converter, its oneof (None for none or proto3 `optional`'s), and
# for a plain scalar field the Python type (and integer bounds) a JSON value of it may have to
# be passed on as it is, without a call — the common case, checked inline.
_Step = tuple[str, _Convert, str | None, type | None, tuple[int, int] | None]


def _plan_object(desc: Descriptor, strict: bool) -> _Parse:
    object_type = opts.object_type(desc)
    steps: dict[str, _Step] = {field.name: _step(field, strict) for field in opts.fields_of(desc)}

    def parse(data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise _wrong_type("an object", data)
        kwargs: dict[str, Any] = {}
        groups: dict[str, str] | None = None
        for key, value in data.items():
            step = steps.get(key)
            if step is None:
                if strict and not (key == "object" and object_type and value in (None, object_type)):
                    raise _Misfit(_unrecognized).at(f".{key}")  # echoing the discriminator is harmless
                continue
            if value is None:
                continue
            name, convert, group, plain, bounds = step
            if group is not None:
                groups = {} if groups is None else groups
                other = groups.setdefault(group, key)
                if other != key:
                    raise _Misfit(_combined(other)).at(f".{key}")
            if type(value) is plain and (bounds is None or bounds[0] <= cast(int, value) <= bounds[1]):
                kwargs[name] = value
                continue
            try:
                kwargs[name] = convert(value)
            except _Misfit as misfit:
                raise misfit.at(f".{key}") from None
        return kwargs

    return parse


def _step(field: FieldDescriptor, strict: bool) -> _Step:
    oneof = field.containing_oneof
    group = oneof.name if oneof is not None and len(oneof.fields) > 1 else None
    plain, bounds = (None, None) if field.is_repeated else _plain(field)
    return field.name, _value_converter(field, strict), group, plain, bounds


def _plain(field: FieldDescriptor) -> tuple[type | None, tuple[int, int] | None]:
    """The Python type of a JSON value a scalar field takes as it is (and an integer's bounds);
    None for enums and bytes, which always convert."""
    kind = field.type
    if kind == _FD.TYPE_STRING:
        return str, None
    if kind == _FD.TYPE_BOOL:
        return bool, None
    if kind in INT_RANGES:
        return int, INT_RANGES[kind]
    if kind == _FD.TYPE_DOUBLE:  # not FLOAT: a float32 is rounded (the checks stay in `_real`)
        return float, None
    return None, None


def _unrecognized(path: str) -> CodecError:
    return CodecError(f"Unrecognized request argument supplied: {path}", path)


def _combined(other: str) -> Callable[[str], CodecError]:
    return lambda path: CodecError(f"'{path}' cannot be combined with '{other}'.", path)


def _wrong_type(expected: str, value: Any) -> _Misfit:
    return _Misfit(lambda path: type_error(path, expected, value))


def _value_converter(field: FieldDescriptor, strict: bool) -> _Convert:
    """Checks a field's JSON value and returns its constructor argument."""
    if opts.is_map(field):
        key_field, value_field = opts.map_fields(field)
        item = _item_converter(value_field, strict)
        string_keys = key_field.type == _FD.TYPE_STRING
        plain_values = (
            _plain(value_field)[0] if value_field.type in (_FD.TYPE_STRING, _FD.TYPE_BOOL) else None
        )

        def convert_map(value: Any) -> dict[Any, Any]:
            if not isinstance(value, dict):
                raise _wrong_type("an object", value)
            if string_keys and plain_values is not None:
                for entry in value.values():
                    if type(entry) is not plain_values:
                        break
                else:
                    return value  # constructor arguments are only read
            entries = {}
            for key, entry in value.items():
                try:
                    map_key = key if string_keys else _map_key(key_field, key)
                    entries[map_key] = item(entry)
                except _Misfit as misfit:
                    raise misfit.at(f".{key}") from None
            return entries

        return convert_map
    item = _item_converter(field, strict)
    if not field.is_repeated:
        return item
    plain_items = _plain(field)[0] if field.type in (_FD.TYPE_STRING, _FD.TYPE_BOOL) else None

    def convert_list(value: Any) -> list[Any]:
        if not isinstance(value, list):
            raise _wrong_type("an array", value)
        if plain_items is not None:
            for entry in value:
                if type(entry) is not plain_items:
                    break
            else:
                return value  # constructor arguments are only read
        items = []
        for index, entry in enumerate(value):
            try:
                items.append(item(entry))
            except _Misfit as misfit:
                raise misfit.at(f"[{index}]") from None
        return items

    return convert_list


def _deferred(check: Callable[[str], Any]) -> Callable[[str], CodecError]:
    """The CodecError ``check(path)`` raises, for a check already seen to fail."""

    def error(path: str) -> CodecError:
        try:
            check(path)
        except CodecError as codec_error:
            return codec_error
        raise AssertionError("the check passed the second time")

    return error


def _map_key(key_field: FieldDescriptor, key: Any) -> Any:
    try:
        return coerce_text(key_field, key, "")
    except CodecError:
        raise _Misfit(_deferred(lambda path: coerce_text(key_field, key, path))) from None


def _item_converter(field: FieldDescriptor, strict: bool) -> _Convert:
    """Checks one JSON value of a field (the field's, a list item's or a map value's)."""
    kind = field.type
    if kind == _FD.TYPE_MESSAGE:
        return _message_converter(opts.message_of(field), strict)
    if kind == _FD.TYPE_STRING:
        return _typed(str, "a string")
    if kind == _FD.TYPE_BOOL:
        return _typed(bool, "a boolean")
    if kind in INT_RANGES:
        return _integer(*INT_RANGES[kind])
    if kind in FLOAT_TYPES:
        return _real
    if kind == _FD.TYPE_ENUM:
        return _enum(field)
    if kind == _FD.TYPE_BYTES:
        return _bytes
    return _no_scalar


def _typed(python_type: type, expected: str) -> _Convert:
    def convert(value: Any) -> Any:
        if not isinstance(value, python_type):
            raise _wrong_type(expected, value)
        return value

    return convert


def _integer(low: int, high: int) -> _Convert:
    def convert(value: Any) -> int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise _wrong_type("an integer", value)
        if not low <= value <= high:
            raise _Misfit(lambda path: out_of_range(path, value))
        return value

    return convert


def _real(value: Any) -> float:
    if not is_number(value):
        raise _wrong_type("a number", value)
    return float(value)


def _enum(field: FieldDescriptor) -> _Convert:
    numbers = opts.enum_by_wire(opts.enum_of(field))

    def convert(value: Any) -> int:
        if not isinstance(value, str):
            raise _wrong_type("a string", value)
        number = numbers.get(value)
        if number is None:
            raise _Misfit(lambda path: unknown_enum(field, value, path))
        return number

    return convert


def _bytes(value: Any) -> bytes:
    try:
        return decode_base64(value, "")
    except CodecError:
        raise _Misfit(_deferred(lambda path: decode_base64(value, path))) from None


def _no_scalar(value: Any) -> Any:
    raise _Misfit(lambda path: CodecError(f"'{path}' cannot be given as a scalar.", path))


def _message_converter(desc: Descriptor, strict: bool) -> _Convert:
    """Checks the JSON value of a message-typed field: an object, or for the special types
    ``"auto"`` or a number, the inner map or list, any JSON."""
    auto = opts.auto_or_number_fields(desc)
    if auto is not None:
        return _auto_or_number(auto[0].name, auto[1])
    inner = opts.unwrap_field(desc)
    if inner is not None:
        name, convert_inner = inner.name, _value_converter(inner, strict)
        return lambda value: {name: convert_inner(value)}
    if desc.full_name == _STRUCT:
        as_object = _typed(dict, "an object")  # the constructor turns the JSON object into a Struct
        return lambda value: as_object(_shallow(value))
    if desc.file.package == "google.protobuf":
        well_known = _well_known(desc)
        return lambda value: well_known(_shallow(value))
    return _object_parser(desc, strict)  # which checks for an object


def _auto_or_number(auto_name: str, number_field: FieldDescriptor) -> _Convert:
    number = _item_converter(number_field, strict=True)
    number_name = number_field.name
    expected = '"auto" or an integer' if number_field.type in INT_RANGES else '"auto" or a number'
    auto = {auto_name: True}  # constructor arguments are only read
    plain, bounds = _plain(number_field)

    def convert(value: Any) -> dict[str, Any]:
        if value == "auto":
            return auto
        kind = type(value)
        if kind is plain and (bounds is None or bounds[0] <= value <= bounds[1]):
            return {number_name: value}
        if kind is not int and kind is not float and not is_number(value):
            raise _wrong_type(expected, value)
        return {number_name: number(value)}

    return convert


def _shallow(value: Any) -> Any:
    """`value` itself, unless it nests deeper than `MAX_JSON_DEPTH`: protobuf's Struct, JSON
    reader and decoder all recurse, so depth is checked before any of them sees the value."""
    if nested_deeper_than(value, MAX_JSON_DEPTH):
        raise _Misfit(_too_deep)
    return value


def _too_deep(path: str) -> CodecError:
    return CodecError(
        f"Invalid value for '{path}': objects and arrays may be nested at most {MAX_JSON_DEPTH} levels deep.",
        path,
    )


def _well_known(desc: Descriptor) -> _Convert:
    message_cls: Any = message_factory.GetMessageClass(desc)

    def convert(value: Any) -> Message:
        if desc.full_name == _LIST_VALUE and not isinstance(value, list):
            raise _wrong_type("an array", value)
        message: Message = message_cls()
        try:
            json_format.ParseDict(value, message)
        except json_format.ParseError as exc:
            reason = str(exc)  # `exc` itself is unbound when the block ends
            raise _Misfit(lambda path: CodecError(f"Invalid value for '{path}': {reason}", path)) from None
        return message

    return convert
