"""OpenAI JSON for tunegate messages: the contract's rendering rules, in one sans-IO codec.

`to_openai(message)` renders a `tunegate.v1` message exactly as OpenAI's API does (integer
timestamps, `null`s, enum spellings such as `fine-tune`, `"auto"` or a number, `object`
discriminators); `from_openai(data, MessageClass)` parses OpenAI JSON strictly. The rules are the
custom options of `proto/tunegate/v1/options.proto`. The REST edge and the server both use it;
so can any Python client of the gRPC API.
"""

from __future__ import annotations

from tunegate.openai_json._codec import (
    CodecError,
    apply_form_field,
    apply_headers,
    apply_path_params,
    from_openai,
    from_query,
    to_openai,
)
from tunegate.openai_json._scalars import (
    MAX_JSON_DEPTH,
    nested_deeper_than,
    too_deep_field,
    too_deep_param,
)
from tunegate.openai_json._schema import Direction, SchemaSet, message_types, nullable

__all__ = [
    "MAX_JSON_DEPTH",
    "CodecError",
    "Direction",
    "SchemaSet",
    "apply_form_field",
    "apply_headers",
    "apply_path_params",
    "from_openai",
    "from_query",
    "message_types",
    "nested_deeper_than",
    "nullable",
    "to_openai",
    "too_deep_field",
    "too_deep_param",
]
