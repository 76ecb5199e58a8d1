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

import re
from collections.abc import Mapping
from typing import Any, TypeVar

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from tunegate.openai_json import _options as opts
from tunegate.openai_json._parse import parse_json
from tunegate.openai_json._render import to_openai
from tunegate.openai_json._scalars import CodecError, coerce_text, json_type

__all__ = [
    "CodecError",
    "apply_form_field",
    "apply_headers",
    "apply_path_params",
    "from_openai",
    "from_query",
    "to_openai",
]

M = TypeVar("M", bound=Message)

_FD = FieldDescriptor
# `name`, `name[key]`, `name[a][b]` — the bracket syntax of OpenAI forms and query filters.
_BRACKETS = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)((?:\[[^\[\]]*\])*)")


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
        raise CodecError(f"The request body must be a JSON object, not {json_type(data)}.")
    message = parse_json(data, message_cls, strict=not lenient)
    if path_params:
        apply_path_params(message, path_params)
    if headers is not None:
        apply_headers(message, headers)
    return message


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
            key = coerce_text(key_field, rest[0], raw_key)
            getattr(map_owner, map_field.name)[key] = coerce_text(value_field, text, raw_key)
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
        getattr(message, field.name).append(coerce_text(field, text, param))
    elif field.type == _FD.TYPE_MESSAGE:
        sub = getattr(message, field.name)
        auto = opts.auto_or_number_fields(opts.message_of(field))
        if auto is None:
            raise CodecError(f"'{param}' cannot be given as text.", param)
        if text == "auto":
            setattr(sub, auto[0].name, True)
        else:
            setattr(sub, auto[1].name, coerce_text(auto[1], text, param))
    else:
        setattr(message, field.name, coerce_text(field, text, param))
