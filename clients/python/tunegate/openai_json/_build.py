"""The fast path of parsing: OpenAI JSON → a message's constructor arguments, checked.

``builder(desc, strict)(data)`` returns the keyword arguments that construct the message
``data`` stands for — nested messages as nested dicts, ``"auto" | number`` as ``{"auto": True}``
or ``{"value": n}``, enum spellings as numbers — so that one constructor call builds the whole
tree in protobuf's C code. That is ~2× faster than setting fields one by one from Python, which
dominates a provider listing's cost.

It accepts only what is plainly well-typed: the exact JSON type of each field, integers in
range, known enum spellings, no unknown keys (when strict), no two members of one oneof.
Anything else raises ``Unusual``, and ``from_openai`` runs the general parser, which accepts
the odd-but-valid (``3.0`` for an integer) and reports errors with their ``param``. Both paths
build equal messages for every input the fast one accepts (``tests/openai_json``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from tunegate.openai_json import _options as opts
from tunegate.openai_json._generate import Source

__all__ = ["FLOAT_TYPES", "INT_RANGES", "Unusual", "builder", "fast_test"]

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
_STRUCT = "google.protobuf.Struct"


class Unusual(Exception):  # a signal, not an error: the general parser decides
    """The value needs the general parser."""


def _unusual(*_: Any) -> Any:
    raise Unusual


def fast_test(field: FieldDescriptor, var: str = "v") -> str | None:
    """A test of `var` that holds for a well-typed JSON scalar protobuf takes as it is (None:
    no such test, e.g. bytes)."""
    kind = field.type
    if kind == _FD.TYPE_STRING:
        return f"type({var}) is str"
    if kind == _FD.TYPE_BOOL:
        return f"type({var}) is bool"
    if kind in INT_RANGES:
        low, high = INT_RANGES[kind]
        return f"(type({var}) is int and {low} <= {var} <= {high})"
    if kind in FLOAT_TYPES:
        return f"(type({var}) is float or type({var}) is int)"
    return None


_Build = Callable[[Any], dict[str, Any]]
_builders: dict[tuple[Any, bool], _Build] = {}
_building: set[tuple[Any, bool]] = set()  # recursion guard


def builder(desc: Descriptor, strict: bool) -> _Build:
    """The (cached) constructor-arguments builder of a message type (see the module docstring)."""
    key = (desc, strict)
    build = _builders.get(key)
    if build is None:
        _building.add(key)
        try:
            build = _builders[key] = _compile(desc, strict)
        finally:
            _building.discard(key)
    return build


def _nested(desc: Descriptor, strict: bool) -> _Build:
    if (desc, strict) in _building:
        return lambda data: builder(desc, strict)(data)
    return builder(desc, strict)


def _compile(desc: Descriptor, strict: bool) -> _Build:
    src = Source("def build(data):")
    unusual = src.name(Unusual, "unusual")
    src.add(f"if type(data) is not dict: raise {unusual}")
    if opts.auto_or_number_fields(desc) is not None or opts.unwrap_field(desc) is not None:
        src.add(f"raise {unusual}")  # only meaningful as a field's value: see `_emit`
        return src.build("build", f"build {desc.full_name}")
    if desc.file.package == "google.protobuf":
        src.add(f"raise {unusual}")
        return src.build("build", f"build {desc.full_name}")
    fields = opts.fields_of(desc)
    object_type = opts.object_type(desc)
    if strict:
        known = frozenset(f.name for f in fields) | ({"object"} if object_type else set())
        src.add(f"if not data.keys() <= {src.name(known, 'known')}: raise {unusual}")
        if object_type:
            src.add(f"if data.get('object') not in (None, {object_type!r}): raise {unusual}")
    src.add("kw = {}")
    for name in sorted({g for g in map(_group, fields) if g}):  # real oneofs, not `optional`'s
        src.add(f"seen_{name} = False")
    for field in fields:
        src.add(f"v = data.get({field.name!r})")
        src.add("if v is not None:")
        oneof = _group(field)
        if oneof is not None:
            src.add(f"if seen_{oneof}: raise {unusual}", 2)
            src.add(f"seen_{oneof} = True", 2)
        _emit(src, field, strict, unusual)
    src.add("return kw")
    return src.build("build", f"build {desc.full_name}{'' if strict else ' (lenient)'}")


def _group(field: FieldDescriptor) -> str | None:
    """The name of the oneof `field` belongs to, unless it is alone in it (proto3 `optional`)."""
    oneof = field.containing_oneof
    return None if oneof is None or len(oneof.fields) < 2 else oneof.name


def _emit(src: Source, field: FieldDescriptor, strict: bool, unusual: str, target: str = "kw") -> None:
    """Lines that check `v` (not None) and put the constructor's value into `target[name]`."""
    key = f"{target}[{field.name!r}]"
    kind = field.type
    if opts.is_map(field):
        map_key, map_value = opts.map_fields(field)
        value_test = _item_test(map_value)
        if value_test is None or map_key.type != _FD.TYPE_STRING:
            src.add(f"raise {unusual}", 2)
            return
        src.add(f"if type(v) is not dict or not all({value_test} for x in v.values()): raise {unusual}", 2)
        src.add(f"{key} = v", 2)
        return
    if field.is_repeated:
        if kind == _FD.TYPE_MESSAGE:
            src.add(f"if type(v) is not list: raise {unusual}", 2)
            build = src.name(_nested(opts.message_of(field), strict), "build")
            src.add(f"{key} = [{build}(x) for x in v]", 2)
            return
        item_test = _item_test(field)
        if item_test is None:
            src.add(f"raise {unusual}", 2)
            return
        src.add(f"if type(v) is not list or not all({item_test} for x in v): raise {unusual}", 2)
        src.add(f"{key} = v", 2)
        return
    if kind == _FD.TYPE_ENUM:
        numbers = src.name(opts.enum_by_wire(opts.enum_of(field)), "enum")
        src.add(f"x = {numbers}.get(v) if type(v) is str else None", 2)
        src.add(f"if x is None: raise {unusual}", 2)
        src.add(f"{key} = x", 2)
        return
    if kind != _FD.TYPE_MESSAGE:
        test = fast_test(field)
        src.add(f"if not ({test}): raise {unusual}" if test else f"raise {unusual}", 2)
        src.add(f"{key} = v", 2)
        return
    sub = opts.message_of(field)
    auto = opts.auto_or_number_fields(sub)
    inner = opts.unwrap_field(sub)
    if auto is not None:
        auto_field, number_field = auto
        src.add(f"if v == 'auto': {key} = {src.name({auto_field.name: True}, 'auto')}", 2)
        src.add(f"elif {fast_test(number_field)}: {key} = {{{number_field.name!r}: v}}", 2)
        src.add(f"else: raise {unusual}", 2)
    elif inner is not None:  # the JSON value is the inner map or list
        src.add("u = {}", 2)
        _emit(src, inner, strict, unusual, target="u")
        src.add(f"{key} = u", 2)
    elif sub.full_name == _STRUCT:
        src.add(f"if type(v) is not dict: raise {unusual}", 2)  # protobuf converts the JSON
        src.add(f"{key} = v", 2)
    else:
        src.add(f"{key} = {src.name(_nested(sub, strict), 'build')}(v)", 2)


def _item_test(field: FieldDescriptor) -> str | None:
    """`fast_test` of `x` (a list item or map value); enums and bytes: None (general parser)."""
    return fast_test(field, "x")
