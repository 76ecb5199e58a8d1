"""OpenAI's rules for a create request, checked before anything costs money.

Pure functions over the OpenAI JSON body (`to_openai(CreateFineTuningJobRequest)` minus the
gateway's own keys). Every failure is `InvalidArgument` whose `param` is OpenAI's dotted path,
e.g. `method.dpo.hyperparameters.beta`. File ids are checked elsewhere (they need the store).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from tunegate.server.errors import InvalidArgument

__all__ = ["MAX_METADATA_PAIRS", "check_create_request", "check_metadata"]

MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
MAX_SUFFIX = 64
MAX_SEED = 2_147_483_647
MAX_INTEGRATIONS = 5
METHODS = ("supervised", "dpo", "reinforcement")

# name → (kind, low, high, low_inclusive); each also accepts "auto".
_RANGES: dict[str, tuple[str, float, float, bool]] = {
    "n_epochs": ("int", 1, 50, True),
    "batch_size": ("int", 1, 256, True),
    "learning_rate_multiplier": ("number", 0, math.inf, False),
    "beta": ("number", 0, 2, False),
    "compute_multiplier": ("number", 0.00001, 10, False),
    "eval_interval": ("int", 1, math.inf, True),
    "eval_samples": ("int", 1, math.inf, True),
}


def _invalid(message: str, param: str, code: str = "invalid_value") -> InvalidArgument:
    return InvalidArgument(message, code=code, param=param)


def _missing(param: str) -> InvalidArgument:
    return _invalid(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")


def check_metadata(metadata: Mapping[str, Any] | None, *, param: str = "metadata") -> None:
    """≤ 16 pairs, keys ≤ 64 characters, string values ≤ 512 characters."""
    if metadata is None:
        return
    if len(metadata) > MAX_METADATA_PAIRS:
        raise _invalid(f"'{param}' can have at most {MAX_METADATA_PAIRS} key-value pairs.", param)
    for key, value in metadata.items():
        if not key or len(key) > MAX_METADATA_KEY:
            raise _invalid(
                f"Metadata keys must be 1 to {MAX_METADATA_KEY} characters long.", f"{param}.{key}"
            )
        if not isinstance(value, str) or len(value) > MAX_METADATA_VALUE:
            raise _invalid(
                f"Metadata values must be strings of at most {MAX_METADATA_VALUE} characters.",
                f"{param}.{key}",
            )


def _check_hyperparameters(values: Mapping[str, Any] | None, param: str) -> None:
    for name, value in (values or {}).items():
        rule = _RANGES.get(name)
        if rule is None or value is None or value == "auto":
            continue  # the codec has already refused unknown names and wrong JSON types
        kind, low, high, inclusive = rule
        ok = (low <= value if inclusive else low < value) and value <= high
        if not ok or (kind == "int" and value != int(value)):
            bounds = f"{'at least' if inclusive else 'greater than'} {low:g}"
            if math.isfinite(high):
                bounds += f" and at most {high:g}"
            raise _invalid(f"'{param}.{name}' must be 'auto' or {bounds}; got {value}.", f"{param}.{name}")


def _check_method(method: Mapping[str, Any]) -> None:
    kind = method.get("type")
    present = [name for name in METHODS if method.get(name) is not None]
    if not kind:
        if present:
            raise _invalid("'method.type' is required when a method is given.", "method.type")
        return
    others = [name for name in present if name != kind]
    if others:
        raise _invalid(
            f"Method type '{kind}' cannot be combined with a '{others[0]}' block.", "method", "invalid_method"
        )
    block = method.get(kind) or {}
    _check_hyperparameters(block.get("hyperparameters"), f"method.{kind}.hyperparameters")
    if kind == "reinforcement" and not block.get("grader"):
        raise _missing("method.reinforcement.grader")


def _check_integrations(integrations: list[Any] | None) -> None:
    if integrations is None:
        return
    if len(integrations) > MAX_INTEGRATIONS:
        raise _invalid(f"At most {MAX_INTEGRATIONS} integrations are allowed.", "integrations")
    for index, item in enumerate(integrations):
        param = f"integrations[{index}]"
        if item.get("type") != "wandb":
            raise _invalid("Only 'wandb' integrations are supported.", f"{param}.type")
        if not (item.get("wandb") or {}).get("project"):
            raise _missing(f"{param}.wandb.project")


def check_create_request(body: Mapping[str, Any]) -> None:
    """Raises `InvalidArgument` for a body OpenAI would refuse (field rules, not file ids)."""
    for name in ("model", "training_file"):
        if not body.get(name):
            raise _missing(name)
    suffix = body.get("suffix")
    if suffix is not None and not 1 <= len(suffix) <= MAX_SUFFIX:
        raise _invalid(f"'suffix' must be 1 to {MAX_SUFFIX} characters long.", "suffix")
    seed = body.get("seed")
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise _invalid(f"'seed' must be between 0 and {MAX_SEED}.", "seed")
    check_metadata(body.get("metadata"))
    _check_hyperparameters(body.get("hyperparameters"), "hyperparameters")
    method = body.get("method")
    if method is not None:
        _check_method(method)
        if body.get("hyperparameters") and method.get("type") not in (None, "supervised"):
            raise _invalid(
                "The deprecated 'hyperparameters' apply to supervised fine-tuning only; "
                "use 'method.<type>.hyperparameters'.",
                "hyperparameters",
            )
    _check_integrations(body.get("integrations"))
