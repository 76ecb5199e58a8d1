"""Google Vertex AI provider (`VertexProvider`, in `_provider`): `_auth` the key files and
cached tokens, `_gcs` GCS names and resumable uploads, `_convert` the training-data converter,
`_jobs` the tuningJobs translations, `_gemini` chat on a tuned endpoint."""

from __future__ import annotations

from tunegate.server.providers.vertex._provider import VertexProvider

__all__ = ["VertexProvider"]
