"""tunegate.edge._headers and edge._config: what crosses the edge, and validated configuration."""

from __future__ import annotations

import pytest
from tunegate.edge import (
    EdgeConfig,
    channel_options,
    forward_metadata,
    request_id_from,
    response_headers,
    server_options,
)


def test_allow_list() -> None:
    headers = [
        ("Authorization", "Bearer sk-1"),
        ("api-key", "azure"),
        ("X-Portkey-Provider", "openai"),
        ("x-portkey-virtual-key", "vk"),
        ("Idempotency-Key", "idem"),
        ("OpenAI-Organization", "org"),
        ("OpenAI-Project", "proj"),
        ("Cookie", "secret"),
        ("Connection", "keep-alive"),
        ("Host", "x"),
        ("grpc-timeout", "1S"),
        ("x-portkey-trace-bin", "AAAA"),
        ("X-Stainless-Lang", "python"),
        ("x-portkey-bad", "caf\u00e9"),
        ("X-Request-Id", "client-id"),
    ]
    metadata = forward_metadata(headers, request_id="req_1", peer="10.0.0.9")
    assert metadata == (
        ("authorization", "Bearer sk-1"),
        ("api-key", "azure"),
        ("x-portkey-provider", "openai"),
        ("x-portkey-virtual-key", "vk"),
        ("idempotency-key", "idem"),
        ("openai-organization", "org"),
        ("openai-project", "proj"),
        ("x-forwarded-for", "10.0.0.9"),
        ("x-request-id", "req_1"),
    )


def test_forwarded_for_appends_peer() -> None:
    metadata = dict(
        forward_metadata([("X-Forwarded-For", "1.1.1.1, 2.2.2.2")], request_id="r", peer="3.3.3.3")
    )
    assert metadata["x-forwarded-for"] == "1.1.1.1, 2.2.2.2, 3.3.3.3"


def test_request_id() -> None:
    assert request_id_from({"x-request-id": "abc-123"}) == "abc-123"
    for bad in ("", "has space", "x" * 200, "\u00e9t\u00e9"):
        fresh = request_id_from({"x-request-id": bad})
        assert fresh.startswith("req_") and len(fresh) == 36
    assert request_id_from({}) != request_id_from({})


def test_response_headers_from_initial_metadata() -> None:
    metadata = [
        ("x-content-length", "12"),
        ("content-disposition", 'attachment; filename="a.jsonl"'),
        ("retry-after", "3"),
        ("x-internal", "no"),
        ("content-type", "text/html"),
    ]
    assert response_headers(metadata) == {
        "content-length": "12",
        "content-disposition": 'attachment; filename="a.jsonl"',
        "retry-after": "3",
    }
    assert response_headers(None) == {}


def test_config_defaults_and_validation() -> None:
    config = EdgeConfig()
    assert (config.grpc_target, config.host, config.port) == ("127.0.0.1:50051", "127.0.0.1", 8787)
    assert config.max_file_bytes == 512 * 1024 * 1024 and config.max_part_bytes == 64 * 1024 * 1024
    assert (
        config.part_limit("file") == config.max_file_bytes
        and config.part_limit("data") == config.max_part_bytes
    )
    options = dict(channel_options(config))
    assert options["grpc.max_receive_message_length"] == 64 * 1024 * 1024
    assert options["grpc.keepalive_time_ms"] == 30_000 and options["grpc.keepalive_permit_without_calls"] == 1
    for bad in (
        {"port": -1},
        {"port": 70000},
        {"chunk_bytes": 1024},
        {"chunk_bytes": 2 * 1024 * 1024},
        {"max_file_bytes": 0},
        {"unary_timeout": 0},
        {"grpc_target": " "},
        {"keepalive_timeout": 0},
        {"head_timeout": -1},
        {"body_timeout": 0},
        {"lingering_time": -1},
        {"max_headers": 2},
        {"max_line_bytes": 10},
        {"max_field_bytes": 1 << 20},
        {"max_json_bytes": 0},
    ):
        with pytest.raises(ValueError):
            EdgeConfig(**bad)


def test_server_options_are_the_configured_limits() -> None:
    config = EdgeConfig(keepalive_timeout=5, max_headers=64, max_line_bytes=4096, lingering_time=0)
    options = server_options(config)
    assert options["keepalive_timeout"] == 5 and options["max_headers"] == 64
    assert options["max_line_size"] == 4096 and options["max_field_size"] == 8190
    assert options["lingering_time"] == 0 and options["handler_cancellation"] is False
    defaults = EdgeConfig()
    assert (defaults.keepalive_timeout, defaults.max_headers, defaults.max_json_bytes) == (75.0, 128, 1 << 20)
