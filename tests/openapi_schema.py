"""Validate JSON against OpenAI's published schemas (``tests/oracles/openai-openapi.yaml``, a copy of
OpenAI's spec; its source is noted in ``tests/oracles/README.md``).

Usage::

    from tests.openapi_schema import validate, example
    validate("FineTuningJob", body)          # raises jsonschema.ValidationError on mismatch
    example("FineTuningJob")                  # the schema's x-oaiMeta example, parsed

The spec is OpenAPI 3.1 (JSON Schema 2020-12). It is loaded once per process (cached) into a
``referencing`` registry, so ``$ref: '#/components/schemas/...'`` resolves anywhere in it.
OpenAPI-3.0 leftovers are rewritten into 2020-12: ``nullable: true`` (also inside ``allOf``)
becomes ``anyOf: [<schema>, {type: null}]``; boolean ``exclusiveMinimum``/``exclusiveMaximum``
become numeric bounds.
"""

from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

__all__ = ["SPEC_PATH", "component", "example", "path_example", "spec", "validate"]

SPEC_PATH = Path(os.environ.get("OPENAI_SPEC", Path(__file__).parent / "oracles" / "openai-openapi.yaml"))
_URI = "urn:openai:openapi"


@functools.cache
def spec() -> dict[str, Any]:
    """The whole OpenAPI document, nullable-normalised (loaded once)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with SPEC_PATH.open("rb") as stream:
        document = yaml.load(stream, Loader=loader)
    result: dict[str, Any] = _normalise(document)
    return result


@functools.cache
def _registry() -> Registry[Any]:
    resource: Resource[Any] = Resource.from_contents(spec(), default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource(_URI, resource)
    return registry


@functools.cache
def _validator(schema_name: str) -> jsonschema.Draft202012Validator:
    if schema_name not in spec()["components"]["schemas"]:
        raise KeyError(f"no component schema {schema_name!r} in {SPEC_PATH}")
    schema = {"$ref": f"{_URI}#/components/schemas/{schema_name}"}
    return jsonschema.Draft202012Validator(schema, registry=_registry())


def validate(schema_name: str, instance: Any) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``instance`` fits ``#/components/schemas/<name>``."""
    error = jsonschema.exceptions.best_match(_validator(schema_name).iter_errors(instance))
    if error is not None:
        raise error


def component(schema_name: str) -> dict[str, Any]:
    """The (normalised) component schema itself, e.g. to read its ``properties``/``required``."""
    result: dict[str, Any] = spec()["components"]["schemas"][schema_name]
    return result


def example(schema_name: str) -> Any:
    """The component's ``x-oaiMeta.example``, parsed (OpenAI's examples are near-JSON)."""
    return _loads_lenient(component(schema_name)["x-oaiMeta"]["example"])


def path_example(path: str, method: str) -> Any:
    """The first response example of an operation, e.g. ``path_example("/files", "get")``."""
    examples = spec()["paths"][path][method.lower()]["x-oaiMeta"]["examples"]
    first = examples[0] if isinstance(examples, list) else examples
    return _loads_lenient(first["response"])


def _loads_lenient(text: str) -> Any:
    # The examples are hand-written: trailing commas, and now and then a missing one.
    text = re.sub(r",(\s*[}\]])", r"\1", text)
    text = re.sub(r'("|\d|true|false|null)(\s*\n\s*")', r"\1,\2", text)
    return json.loads(text)


def _normalise(node: Any) -> Any:
    if isinstance(node, list):
        return [_normalise(item) for item in node]
    if not isinstance(node, dict):
        return node
    # `allOf: [<schema>, {nullable: true}]` makes the whole value nullable: read the members'
    # `nullable` before they are normalised (alone, `{nullable: true}` would become "any or
    # null", which inside allOf adds nothing).
    members = node.get("allOf")
    nullable = node.get("nullable", False) is True
    if isinstance(members, list):
        stripped = []
        for member in members:
            if isinstance(member, dict) and member.get("nullable", False) is True:
                nullable = True
                member = {key: value for key, value in member.items() if key != "nullable"}
            stripped.append(member)
        node = {**node, "allOf": stripped}
    out = {key: _normalise(value) for key, value in node.items() if key != "nullable"}
    for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(out.get(bound), bool) and out.pop(bound) and limit in out:  # OpenAPI 3.0 form
            out[bound] = out.pop(limit)
    if nullable:
        return {"anyOf": [out, {"type": "null"}]}
    return out
