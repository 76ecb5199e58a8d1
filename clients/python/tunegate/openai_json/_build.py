"""The fast paths from OpenAI JSON: a message's constructor arguments, or its rendered JSON.

``builder(desc, strict)(data)`` returns the keyword arguments that construct the message
``data`` stands for — nested messages as nested dicts, ``"auto" | number`` as ``{"auto": True}``
or ``{"value": n}``, enum spellings as numbers — so that one constructor call builds the whole
tree in protobuf's C code, ~2× faster than setting fields one by one from Python.

``json_builder(desc)(data)`` returns what ``to_openai(from_openai(data, lenient=True))`` would —
unknown keys dropped, every field in declaration order with its default, ``null`` or omission,
``"object"`` first, doubles as floats — without building a message at all: for an in-process
caller that wants JSON anyway (see ``Rendered``).

Both accept only what is plainly well-typed: the exact JSON type of each field, integers in
range, known enum spellings, no unknown keys (when strict), no two members of one oneof.
Anything else raises ``Unusual``, and the caller takes the general path (the general parser
accepts the odd-but-valid, such as ``3.0`` for an integer, and names the ``param`` of an error).
Fast and general paths agree on every input the fast one accepts (``tests/openai_json``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from tunegate.openai_json import _options as opts
from tunegate.openai_json._generate import Functions, Source
from tunegate.openai_json._render import EXACT_INT_LIMIT

__all__ = ["FLOAT_TYPES", "INT_RANGES", "Unusual", "builder", "fast_test", "json_builder", "struct_json"]

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
_DEFAULTS = {_FD.TYPE_STRING: "''", _FD.TYPE_BOOL: "False", **{kind: "0" for kind in INT_RANGES}}


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


def builder(desc: Descriptor, strict: bool) -> _Build:
    """The (cached) constructor-arguments builder of a message type (see the module docstring)."""
    return _builders.get((desc, strict, False))


def json_builder(desc: Descriptor) -> _Build:
    """The (cached) rendered-JSON builder of a message type, lenient (see the module docstring)."""
    return _builders.get((desc, False, True))


def struct_json(value: Any) -> Any:
    """A JSON value as a `google.protobuf.Struct` renders it back: numbers went through doubles,
    integral ones come back as ints (`plain_json` of `MessageToDict`)."""
    if type(value) is int:
        return value if abs(value) <= EXACT_INT_LIMIT else float(value)
    if type(value) is float:
        return int(value) if value.is_integer() and abs(value) <= EXACT_INT_LIMIT else value
    if type(value) is dict:
        return {k: struct_json(v) for k, v in value.items()}
    if type(value) is list:
        return [struct_json(v) for v in value]
    if value is None or type(value) is str or type(value) is bool:
        return value
    raise Unusual


class _Emit:
    """What one generated builder writes: its source, mode and the name of its signal."""

    def __init__(self, desc: Descriptor, strict: bool, json: bool) -> None:
        self.src = Source("def build(data):")
        self.strict, self.json = strict, json
        self.unusual = self.src.name(Unusual, "unusual")
        self.label = f"{'json' if json else 'build'} {desc.full_name}{'' if strict else ' (lenient)'}"

    def add(self, line: str, indent: int = 1) -> None:
        self.src.add(line, indent)

    def nested(self, desc: Descriptor) -> str:
        return self.src.name(_builders.nested((desc, self.strict, self.json)), "build")


def _compile(desc: Descriptor, strict: bool, json: bool) -> _Build:
    out = _Emit(desc, strict, json)
    out.add(f"if type(data) is not dict: raise {out.unusual}")
    special = opts.auto_or_number_fields(desc) is not None or opts.unwrap_field(desc) is not None
    if special or desc.file.package == "google.protobuf":
        out.add(f"raise {out.unusual}")  # auto/unwrap: only as a field's value (see `_emit`)
        return out.src.build("build", out.label)
    fields = opts.fields_of(desc)
    object_type = opts.object_type(desc)
    if strict:
        known = frozenset(f.name for f in fields) | ({"object"} if object_type else set())
        out.add(f"if not data.keys() <= {out.src.name(known, 'known')}: raise {out.unusual}")
        if object_type:
            out.add(f"if data.get('object') not in (None, {object_type!r}): raise {out.unusual}")
    out.add(f"kw = {{'object': {object_type!r}}}" if json and object_type else "kw = {}")
    for name in sorted({g for g in map(_group, fields) if g}):  # real oneofs, not `optional`'s
        out.add(f"seen_{name} = False")
    for field in fields:
        out.add(f"v = data.get({field.name!r})")
        out.add("if v is not None:")
        oneof = _group(field)
        if oneof is not None:
            out.add(f"if seen_{oneof}: raise {out.unusual}", 2)
            out.add(f"seen_{oneof} = True", 2)
        _emit(out, field)
        if json:
            absent = _absent(field)
            if absent is not None:
                out.add(f"else: kw[{field.name!r}] = {absent}")
    out.add("return kw")
    return out.src.build("build", out.label)


def _group(field: FieldDescriptor) -> str | None:
    """The name of the oneof `field` belongs to, unless it is alone in it (proto3 `optional`)."""
    oneof = field.containing_oneof
    return None if oneof is None or len(oneof.fields) < 2 else oneof.name


def _absent(field: FieldDescriptor) -> str | None:
    """JSON mode: the rendered value of an absent (or null) field; None: the key is omitted."""
    if opts.is_map(field):
        return "{}"
    if field.is_repeated:
        return "[]"
    if field.has_presence or field.type == _FD.TYPE_ENUM:
        return "None" if opts.is_nullable(field) else None
    if field.type in FLOAT_TYPES:
        return "0.0"
    return _DEFAULTS.get(field.type, "''")


def _emit(out: _Emit, field: FieldDescriptor, target: str = "kw") -> None:
    """Lines that check `v` (not None) and put the built value into `target[name]`."""
    key = f"{target}[{field.name!r}]"
    kind, json, unusual = field.type, out.json, out.unusual
    if opts.is_map(field):
        map_key, map_value = opts.map_fields(field)
        value_test = _item_test(map_value)
        if value_test is None or map_key.type != _FD.TYPE_STRING or (json and map_value.type in FLOAT_TYPES):
            out.add(f"raise {unusual}", 2)
            return
        # Loops, not `all(<generator>)`: a generator costs more than the usual 0-3 items' tests.
        out.add(f"if type(v) is not dict: raise {unusual}", 2)
        out.add("for x in v.values():", 2)
        out.add(f"if not ({value_test}): raise {unusual}", 3)
        out.add(f"{key} = {'dict(v)' if json else 'v'}", 2)
        return
    if field.is_repeated:
        if kind == _FD.TYPE_MESSAGE:
            out.add(f"if type(v) is not list: raise {unusual}", 2)
            out.add(f"{key} = [{out.nested(opts.message_of(field))}(x) for x in v]", 2)
            return
        item_test = _item_test(field)
        if item_test is None:
            out.add(f"raise {unusual}", 2)
            return
        out.add(f"if type(v) is not list: raise {unusual}", 2)
        out.add("for x in v:", 2)
        out.add(f"if not ({item_test}): raise {unusual}", 3)
        if json and kind in FLOAT_TYPES:
            out.add(f"{key} = [float(x) for x in v]", 2)
        else:
            out.add(f"{key} = {'list(v)' if json else 'v'}", 2)
        return
    if kind == _FD.TYPE_ENUM:
        numbers = out.src.name(opts.enum_by_wire(opts.enum_of(field)), "enum")
        out.add(f"x = {numbers}.get(v) if type(v) is str else None", 2)
        out.add(f"if x is None: raise {unusual}", 2)
        out.add(f"{key} = {'v' if json else 'x'}", 2)  # wire spellings and numbers are 1:1
        return
    if kind != _FD.TYPE_MESSAGE:
        test = fast_test(field)
        if test is None or (json and field.type == _FD.TYPE_FLOAT):  # bytes; float32 rounds
            out.add(f"raise {unusual}", 2)
            return
        out.add(f"if not ({test}): raise {unusual}", 2)
        out.add(f"{key} = {'float(v)' if json and kind in FLOAT_TYPES else 'v'}", 2)
        return
    sub = opts.message_of(field)
    auto = opts.auto_or_number_fields(sub)
    inner = opts.unwrap_field(sub)
    if auto is not None:
        auto_field, number_field = auto
        if json and number_field.type == _FD.TYPE_FLOAT:
            out.add(f"raise {unusual}", 2)
            return
        is_float = number_field.type in FLOAT_TYPES
        auto_value = "'auto'" if json else out.src.name({auto_field.name: True}, "auto")
        number = ("float(v)" if is_float else "v") if json else f"{{{number_field.name!r}: v}}"
        out.add(f"if v == 'auto': {key} = {auto_value}", 2)
        out.add(f"elif {fast_test(number_field)}: {key} = {number}", 2)
        out.add(f"else: raise {unusual}", 2)
    elif inner is not None:  # the JSON value is the inner map or list
        out.add("u = {}", 2)
        _emit(out, inner, target="u")
        out.add(f"{key} = {'u[' + repr(inner.name) + ']' if json else 'u'}", 2)
    elif sub.full_name == _STRUCT:
        out.add(f"if type(v) is not dict: raise {unusual}", 2)  # protobuf converts the JSON
        out.add(f"{key} = {out.src.name(struct_json, 'struct') + '(v)' if json else 'v'}", 2)
    else:
        out.add(f"{key} = {out.nested(sub)}(v)", 2)


def _item_test(field: FieldDescriptor) -> str | None:
    """`fast_test` of `x` (a list item or map value); enums and bytes: None (general parser)."""
    return fast_test(field, "x")


_builders = Functions(lambda key: _compile(*key))
