"""Schemathesis against a live gateway on the local provider, driven by two documents: OpenAI's
OpenAPI spec, and the gateway's own (generated from the contract, served at `GET /openapi.json`).

Every generated request to the files, uploads, fine-tuning, models and chat operations the gateway
serves must get an answer that is not a server error, and every answer whose status the spec
documents must be valid against the spec's schema for it. From the gateway's own document every
operation is fuzzed (webhook endpoints and the admin API too), and errors are checked as well:
it documents the error envelope as every operation's `default` answer. `TUNEGATE_FUZZ_EXAMPLES`
sets the examples per operation (15 by default, within the test suite's budget; a soak sets
hundreds).

One correction to the oracle, noted here rather than hidden: the spec's `CreateFileRequest`
accepts `purpose: "evals"` while its `OpenAIFile.purpose` enum omits it; OpenAI (and the
gateway) answer with the purpose the file was created with, so the enum is widened by that one
value before the answers are checked.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance
from tunegate.edge import served_document

from tests.conftest import Gateway, start_gateway

SPEC = Path(__file__).resolve().parents[1] / "oracles" / "openai-openapi.yaml"
EXAMPLES = int(os.environ.get("TUNEGATE_FUZZ_EXAMPLES", "15"))
CHECKS = [not_a_server_error, response_schema_conformance]


@functools.cache
def _document() -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with SPEC.open("rb") as stream:
        document: dict[str, Any] = yaml.load(stream, Loader=loader)
    purpose = document["components"]["schemas"]["OpenAIFile"]["properties"]["purpose"]
    purpose["enum"] = [*purpose["enum"], "evals"]
    return document


api = (
    schemathesis.openapi.from_dict(_document())
    .include(path_regex=r"^/(files|uploads|fine_tuning/jobs|models)")
    .exclude(path_regex=r"^/fine_tuning/checkpoints")
)
chat = schemathesis.openapi.from_dict(_document()).include(path="/chat/completions", method="POST")
ours = schemathesis.openapi.from_dict(json.loads(served_document())).exclude(path="/v1/chat/completions")
ours_chat = schemathesis.openapi.from_dict(json.loads(served_document())).include(path="/v1/chat/completions")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = start_gateway(tmp_path_factory.mktemp("fuzz"), in_process=True)
    yield gateway
    gateway.close()


def _call(case: Any, live: Gateway, *, root: bool = False) -> None:
    """Send ``case`` with a fresh caller's key; ``root``: its paths carry `/v1` themselves."""
    case.headers = {**(case.headers or {}), "Authorization": "Bearer sk-fuzz-" + secrets.token_hex(4)}
    base_url = live.base_url.removesuffix("/v1") if root else live.base_url
    case.call_and_validate(base_url=base_url, checks=CHECKS)


@api.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_files_uploads_and_fine_tuning_answer_within_the_spec(case: Any, live: Gateway) -> None:
    _call(case, live)


@chat.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_chat_completions_answer_within_the_spec(case: Any, live: Gateway) -> None:
    _call(case, live)


@ours.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_answers_within_the_gateways_own_document(case: Any, live: Gateway) -> None:
    _call(case, live, root=True)


@ours_chat.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_chat_completions_answer_within_the_gateways_own_document(case: Any, live: Gateway) -> None:
    _call(case, live, root=True)
