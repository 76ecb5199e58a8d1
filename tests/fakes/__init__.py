"""Loopback fakes of the providers, honest because they check what they receive against each
provider's machine-readable spec (see each module's docstring).

- :class:`FakeOpenAI` — OpenAI under ``/v1`` (``tests.fakes.openai_upstream``);
- :class:`FakeAzureOpenAI` — Azure OpenAI, dated ``2024-10-21`` and ``/openai/v1`` surfaces, many
  resources by path prefix (``tests.fakes.azure_upstream``);
- :class:`FakeFireworks` — Fireworks AI's datasets, SFT/DPO jobs and OpenAI-compatible chat,
  checked against the ``fireworks-ai`` SDK's models (``tests.fakes.fireworks_upstream``).

Both: ``await fake.start(port=0)`` / ``await fake.stop()``, or ``start_fake_*_in_thread()`` /
``fake.close()``; ``fake.requests``, ``fake.violations``, ``fake.jobs``, ``fake.inject(kind, path)``,
``fake.advance(job_id, to=…)``; ``python -m tests.fakes.<module> --port N``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tests.fakes._common import ApiError, FakeServer, Fault, FaultKind, RecordedRequest, Violation

if TYPE_CHECKING:
    from tests.fakes.azure_upstream import FakeAzureOpenAI, start_fake_azure_in_thread
    from tests.fakes.fireworks_upstream import FakeFireworks, start_fake_fireworks_in_thread
    from tests.fakes.openai_upstream import FakeOpenAI, start_fake_openai_in_thread

# The provider modules load lazily so ``python -m tests.fakes.<module>`` runs without runpy's
# "found in sys.modules" warning.
_LAZY = {
    "FakeAzureOpenAI": "tests.fakes.azure_upstream",
    "start_fake_azure_in_thread": "tests.fakes.azure_upstream",
    "FakeFireworks": "tests.fakes.fireworks_upstream",
    "start_fake_fireworks_in_thread": "tests.fakes.fireworks_upstream",
    "FakeOpenAI": "tests.fakes.openai_upstream",
    "start_fake_openai_in_thread": "tests.fakes.openai_upstream",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ApiError",
    "FakeAzureOpenAI",
    "FakeFireworks",
    "FakeOpenAI",
    "FakeServer",
    "Fault",
    "FaultKind",
    "RecordedRequest",
    "Violation",
    "start_fake_azure_in_thread",
    "start_fake_fireworks_in_thread",
    "start_fake_openai_in_thread",
]
