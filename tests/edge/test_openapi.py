"""tunegate.edge._openapi: the OpenAPI document is generated from the contract (and committed
fresh), valid OpenAPI 3.1, served by the edge, and describes exactly the JSON the codec writes
and reads. How it compares with OpenAI's own document: ``test_openapi_openai.py``."""

from __future__ import annotations

import functools
import json
import random
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from openapi_spec_validator import validate as validate_openapi
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from tunegate.edge import (
    OPENAPI_PATH,
    build_routes,
    document_bytes,
    error_response,
    openapi_document,
    proto_comments,
    served_document,
)
from tunegate.edge._openapi import _roots
from tunegate.openai_json import _options as opts
from tunegate.openai_json import from_openai, message_types, to_openai

from tests.conftest import Gateway

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "edge" / "tunegate" / "edge" / "openapi.json"
_FD = FieldDescriptor


@functools.cache
def _document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(served_document())
    return document


@functools.cache
def _registry() -> Registry[Any]:
    resource: Resource[Any] = Resource.from_contents(_document(), default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource("urn:tunegate", resource)
    return registry


def _check(component: str, instance: Any) -> None:
    schema = {"$ref": f"urn:tunegate#/components/schemas/{component}"}
    validator = jsonschema.Draft202012Validator(schema, registry=_registry())
    error = jsonschema.exceptions.best_match(validator.iter_errors(instance))
    if error is not None:
        raise AssertionError(f"{component}: {error.message} at {list(error.absolute_path)}\n{instance}")


def test_the_committed_document_is_what_make_proto_generates() -> None:
    fresh = document_bytes(openapi_document(comments=proto_comments(ROOT / "proto", [ROOT / "third_party"])))
    assert COMMITTED.read_bytes() == served_document()
    assert fresh == served_document(), "edge/tunegate/edge/openapi.json is stale: run `make proto`"


def test_the_document_is_valid_openapi_3_1() -> None:
    assert _document()["openapi"] == "3.1.0"
    validate_openapi(_document())


def test_every_route_is_one_operation_and_there_are_no_others() -> None:
    operations = {(method.upper(), path) for path, item in _document()["paths"].items() for method in item}
    assert operations == {(route.verb, route.path) for route in build_routes()}


def test_proto_comments_become_descriptions() -> None:
    document = _document()
    listing = document["paths"]["/v1/files"]["get"]
    assert listing["summary"] == "List files"
    assert "newest first" in listing["description"]
    limit = next(p for p in listing["parameters"] if p["name"] == "limit")
    assert limit["description"] == "Page size, 1–10000; 10000 when unset."
    assert document["components"]["schemas"]["File"]["description"].startswith("OpenAI's `OpenAIFile`.")


def test_the_edge_serves_the_document(gateway: Gateway) -> None:
    root = gateway.base_url.removesuffix("/v1")
    answer = httpx.get(root + OPENAPI_PATH, headers={"X-Request-Id": "req-doc-1"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.headers["x-request-id"] == "req-doc-1"
    assert answer.content == COMMITTED.read_bytes()
    head = httpx.head(root + OPENAPI_PATH)
    assert head.status_code == 200 and head.content == b""
    assert httpx.post(root + OPENAPI_PATH).status_code == 405


def test_every_error_envelope_fits_the_document() -> None:
    for status, code, param in (
        (400, "invalid_value", "seed"),
        (404, None, None),
        (503, "shutting_down", None),
    ):
        _check("ErrorResponse", error_response(status, "m", code=code, param=param).body)
    with pytest.raises(AssertionError):
        _check("ErrorResponse", {"error": {"message": "m", "type": "t", "param": None}})


# ------------------------------------------------------------------ the codec against the schemas


def _fill(message: Message, rng: random.Random, depth: int = 0) -> None:
    """Set a random subset of ``message``'s fields (every REQUIRED one) to random values."""
    desc = opts.descriptor_of(message)
    if desc.full_name == "google.protobuf.Struct":
        message.update({"k": rng.choice([1, "v", None, [True], {"n": 2.5}])})  # type: ignore[attr-defined]
        return
    for field in desc.fields:
        required = opts.is_required(field)
        if not required and (depth > 3 or rng.random() < 0.4):
            continue
        if opts.is_map(field):
            key_field, value_field = opts.map_fields(field)
            for _ in range(rng.randint(0, 2)):
                key = _scalar(key_field, rng)
                if value_field.type == _FD.TYPE_MESSAGE:
                    _fill(getattr(message, field.name)[key], rng, depth + 1)
                else:
                    getattr(message, field.name)[key] = _scalar(value_field, rng)
        elif field.is_repeated:
            for _ in range(rng.randint(1 if required else 0, 2)):
                if field.type == _FD.TYPE_MESSAGE:
                    _fill(getattr(message, field.name).add(), rng, depth + 1)
                else:
                    getattr(message, field.name).append(_scalar(field, rng, required=True))
        elif field.type == _FD.TYPE_MESSAGE:
            child = getattr(message, field.name)
            child.SetInParent()
            _fill(child, rng, depth + 1)
        else:
            setattr(message, field.name, _scalar(field, rng, required=required))


def _scalar(field: FieldDescriptor, rng: random.Random, *, required: bool = False) -> Any:
    kind = field.type
    if kind == _FD.TYPE_ENUM:
        numbers = [value.number for value in opts.enum_of(field).values]
        return rng.choice([n for n in numbers if n] if required else numbers)
    if kind == _FD.TYPE_STRING:
        return rng.choice(["", "x", "ftjob-é", "a b"])
    if kind == _FD.TYPE_BOOL:
        return rng.random() < 0.5
    if kind in (_FD.TYPE_DOUBLE, _FD.TYPE_FLOAT):
        return rng.choice([0.0, 1.5, -2.0, 3.0])
    if kind == _FD.TYPE_BYTES:
        return rng.randbytes(3)
    if kind in (_FD.TYPE_INT32, _FD.TYPE_SINT32, _FD.TYPE_SFIXED32):
        return rng.choice([0, 1, -(2**31), 2**31 - 1])
    return rng.choice([0, 1, 1_700_000_000, 2**62])


def _components(direction: str) -> list[tuple[str, Descriptor, tuple[str, ...]]]:
    """(component name, message type, fields left out of it) of every message component the
    document has for answers (``output``) or for request bodies (``input``)."""
    routes = build_routes()
    inputs, outputs = _roots(routes)
    both = message_types(inputs) & message_types(outputs)
    body_fields = {
        route.request_cls.DESCRIPTOR.full_name: route.path_fields for route in routes if route.body == "*"
    }
    pool = descriptor_pool.Default()
    found = []
    for full_name in sorted(message_types(outputs if direction == "output" else inputs)):
        desc = pool.FindMessageTypeByName(full_name)
        name = desc.name + ("Input" if direction == "input" and full_name in both else "")
        if name in _document()["components"]["schemas"]:
            found.append((name, desc, body_fields.get(full_name, ()) if direction == "input" else ()))
    return found


@pytest.mark.parametrize("seed", range(40))
def test_what_the_codec_writes_fits_the_answers_schemas(seed: int) -> None:
    rng = random.Random(seed)
    components = _components("output")
    assert len(components) > 20
    for name, desc, _ in components:
        message = message_factory.GetMessageClass(desc)()
        _fill(message, rng)
        _check(name, to_openai(message))


@pytest.mark.parametrize("seed", range(40))
def test_what_the_request_schemas_describe_the_codec_reads(seed: int) -> None:
    """A request rendered by the codec (nulls, ``"auto"``, enum spellings included) fits the
    document's request schema, and the codec parses it back to the same JSON."""
    rng = random.Random(seed)
    components = _components("input")
    assert {"CreateFineTuningJobRequest", "CreateUploadRequest", "FineTuneMethodInput"} <= {
        c[0] for c in components
    }
    for name, desc, omitted in components:
        message_cls = message_factory.GetMessageClass(desc)
        message = message_cls()
        _fill(message, rng)
        for field in omitted:
            message.ClearField(field)
        body = {key: value for key, value in to_openai(message).items() if key not in omitted}
        _check(name, body)
        parsed = to_openai(from_openai(body, message_cls))
        assert {key: value for key, value in parsed.items() if key not in omitted} == body, name


def test_a_request_the_schema_refuses_the_codec_refuses_too() -> None:
    body = {"model": "m", "training_file": "file-1", "hyperparameters": {"n_epochs": "three"}}
    with pytest.raises(AssertionError):
        _check("CreateFineTuningJobRequest", body)
    with pytest.raises(ValueError, match=r"hyperparameters\.n_epochs"):
        from_openai(
            body,
            message_factory.GetMessageClass(
                descriptor_pool.Default().FindMessageTypeByName("tunegate.v1.CreateFineTuningJobRequest")
            ),
        )
    with pytest.raises(AssertionError):
        _check("CreateFineTuningJobRequest", {"model": "m"})  # training_file is required
