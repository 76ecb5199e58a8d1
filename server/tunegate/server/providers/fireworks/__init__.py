"""Fireworks AI provider (`FireworksProvider`, in `_provider`): `_datasets` the datasets (ids,
uploads, line checks), `_jobs` the SFT / DPO job translations."""

from __future__ import annotations

from tunegate.server.providers.fireworks._provider import FireworksProvider

__all__ = ["FireworksProvider"]
