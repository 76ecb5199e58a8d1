"""The metadata store: SQLAlchemy Core over SQLite (inline on the event loop's thread, see
`_inline`) or PostgreSQL (asyncpg), schema under Alembic.

`Database.open(url)` creates the engine, applies SQLite's pragmas, runs the migrations, imports
the intent files an earlier release may have left beside an SQLite database (`_legacy_intents`)
and hands out typed repositories. Rows come back as frozen dataclass records. Every repository
method commits its writes before it returns, on both databases.
"""

from __future__ import annotations

from tunegate.server.store._auth import ApiKeyRecord, AuthRepository, Duplicate, VirtualKeyRecord
from tunegate.server.store._database import (
    MIGRATIONS_DIR,
    Engine,
    create_engine,
    current_revision,
    migrate,
    sqlite_file,
)
from tunegate.server.store._files import DuplicateRequestId, FileRepository
from tunegate.server.store._job_history import MirrorRepository, ProviderFileRepository
from tunegate.server.store._jobs import INTENT, JobRepository
from tunegate.server.store._legacy_intents import import_intent_files
from tunegate.server.store._local import (
    LocalCheckpointRecord,
    LocalEventRecord,
    LocalFileRecord,
    LocalJobRecord,
    LocalStore,
)
from tunegate.server.store._polls import PollRepository
from tunegate.server.store._records import (
    DueDelivery,
    FileRecord,
    JobRecord,
    MirroredRecord,
    ProviderFileRecord,
    UploadPartRecord,
    UploadRecord,
    WebhookDeliveryRecord,
    WebhookEndpointRecord,
)
from tunegate.server.store._uploads import UploadRepository
from tunegate.server.store._webhooks import (
    JOB_EVENT_TYPES,
    WebhookRepository,
    event_id,
    job_event_payload,
    seal,
    unseal,
)

__all__ = [
    "INTENT",
    "JOB_EVENT_TYPES",
    "MIGRATIONS_DIR",
    "ApiKeyRecord",
    "AuthRepository",
    "Database",
    "DueDelivery",
    "Duplicate",
    "DuplicateRequestId",
    "FileRecord",
    "FileRepository",
    "JobRecord",
    "JobRepository",
    "LocalCheckpointRecord",
    "LocalEventRecord",
    "LocalFileRecord",
    "LocalJobRecord",
    "LocalStore",
    "MirrorRepository",
    "MirroredRecord",
    "PollRepository",
    "ProviderFileRecord",
    "ProviderFileRepository",
    "UploadPartRecord",
    "UploadRecord",
    "UploadRepository",
    "VirtualKeyRecord",
    "WebhookDeliveryRecord",
    "WebhookEndpointRecord",
    "WebhookRepository",
    "current_revision",
    "event_id",
    "job_event_payload",
    "migrate",
    "seal",
    "unseal",
]


class Database:
    """An open, migrated metadata database and its repositories."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.files = FileRepository(engine)
        self.uploads = UploadRepository(engine)
        self.jobs = JobRepository(engine)
        self.job_events = MirrorRepository.events(engine)
        self.job_checkpoints = MirrorRepository.checkpoints(engine)
        self.provider_files = ProviderFileRepository(engine)
        self.auth = AuthRepository(engine)
        self.polls = PollRepository(engine)
        self.webhooks = WebhookRepository(engine)
        self.local = LocalStore(engine)

    @classmethod
    async def open(cls, url: str) -> Database:
        """Connect to `url` and migrate the schema to the newest revision."""
        engine = create_engine(url)
        try:
            await migrate(engine)
            database_file = sqlite_file(url)
            if database_file is not None:
                await import_intent_files(engine, database_file)  # before anything reads a job
        except BaseException:
            await engine.dispose()
            raise
        return cls(engine)

    async def close(self) -> None:
        await self.engine.dispose()
