"""Server wiring: health, reflection, FineTuning, error normalisation, config, migrations."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import grpc.aio
import pytest
import sqlalchemy as sa
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tunegate.server import (
    SERVICE_NAMES,
    GatewayServer,
    InvalidArgument,
    ResourceExhausted,
    ServerConfig,
    grpc_server_options,
    owner_from_metadata,
    to_status,
)
from tunegate.server.ids import FILE_PREFIX, is_well_formed, new_id
from tunegate.server.store import MIGRATIONS_DIR, current_revision, migrate
from tunegate.server.store._database import create_engine
from tunegate.server.store._schema import metadata
from tunegate.v1 import files_pb2, files_pb2_grpc, fine_tuning_pb2

from tests.server.conftest import StartGateway
from tests.server.support import error_of

if TYPE_CHECKING:
    from tunegate.v1.fine_tuning_pb2_grpc import FineTuningAsyncStub


async def test_health_serving_then_not_serving(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for name in ("", *SERVICE_NAMES):
            response = await stub.Check(health_pb2.HealthCheckRequest(service=name))
            assert response.status == health_pb2.HealthCheckResponse.SERVING
        await gateway._health.enter_graceful_shutdown()
        response = await stub.Check(health_pb2.HealthCheckRequest(service=""))
        assert response.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_reflection_lists_services(sqlite_channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(sqlite_channel)
    call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    response = await call.read()
    names = {service.name for service in response.list_services_response.service}
    assert names >= {*SERVICE_NAMES, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}
    call.cancel()


async def test_fine_tuning_serves_an_empty_registry(fine_tuning: FineTuningAsyncStub) -> None:
    listed = await fine_tuning.ListFineTuningJobs(fine_tuning_pb2.ListFineTuningJobsRequest())
    assert (list(listed.data), listed.has_more) == ([], False)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        request = fine_tuning_pb2.GetFineTuningJobRequest(fine_tuning_job_id="ftjob-x")
        await fine_tuning.GetFineTuningJob(request)
    assert error_of(info.value) == (grpc.StatusCode.NOT_FOUND, "JOB_NOT_FOUND", "fine_tuning_job_id")


async def test_unexpected_exception_becomes_internal(
    sqlite_gateway: GatewayServer,
    sqlite_channel: grpc.aio.Channel,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def boom(owner: str, file_id: str) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(sqlite_gateway.files, "get", boom)
    stub: files_pb2_grpc.FilesAsyncStub = files_pb2_grpc.FilesStub(sqlite_channel)
    with (
        caplog.at_level(logging.ERROR, logger="tunegate.server"),
        pytest.raises(grpc.aio.AioRpcError) as info,
    ):
        await stub.GetFile(files_pb2.GetFileRequest(file_id="file-x"))
    assert error_of(info.value) == (grpc.StatusCode.INTERNAL, "INTERNAL_ERROR", None)
    assert "secret" not in (info.value.details() or "")
    assert "secret internals" in caplog.text  # logged with its traceback, not sent


async def test_bind_conflict_fails(start_gateway: StartGateway) -> None:
    first = await start_gateway()
    with pytest.raises(RuntimeError):
        await start_gateway(port=first.port)


async def test_stop_is_idempotent(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    await gateway.stop(0)
    await gateway.stop(0)
    await gateway.wait_for_termination()


async def test_migrations_on_empty_database(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    try:
        assert await current_revision(engine) is None
        await migrate(engine)
        await migrate(engine)  # idempotent
        heads = sorted(p.name.split("_")[0] for p in (MIGRATIONS_DIR / "versions").glob("[0-9]*.py"))
        assert await current_revision(engine) == heads[-1]
        async with engine.connect() as conn:
            versions = (
                (await conn.execute(sa.text("SELECT version_num FROM alembic_version"))).scalars().all()
            )
            assert versions == [heads[-1]]
            journal = (await conn.execute(sa.text("PRAGMA journal_mode"))).scalar()
            assert journal == "wal"
            assert (await conn.execute(sa.text("PRAGMA foreign_keys"))).scalar() == 1

            def columns(sync_conn: sa.Connection) -> dict[str, set[str]]:
                inspector = sa.inspect(sync_conn)
                return {name: {c["name"] for c in inspector.get_columns(name)} for name in metadata.tables}

            migrated = await conn.run_sync(columns)
        # The Core table definitions and the migrations agree.
        assert migrated == {name: set(table.columns.keys()) for name, table in metadata.tables.items()}
    finally:
        await engine.dispose()


def test_config_validation_and_options(tmp_path: Path) -> None:
    config = ServerConfig(data_dir=tmp_path)
    assert config.resolved_database_url == f"sqlite:///{(tmp_path / 'tunegate.db').resolve()}"
    options = dict(grpc_server_options(config))
    assert options["grpc.max_receive_message_length"] == 4 * 1024 * 1024
    assert options["grpc.max_send_message_length"] == 64 * 1024 * 1024
    assert options["grpc.so_reuseport"] == 0
    assert options["grpc.http2.min_ping_interval_without_data_ms"] == 20_000
    for bad in ({"port": 70000}, {"max_file_bytes": 0}, {"database_url": "mysql://x"}, {"grace_seconds": -1}):
        with pytest.raises(ValueError):
            ServerConfig(data_dir=tmp_path, **bad)


def test_to_status_details() -> None:
    status = to_status(
        InvalidArgument("Bad purpose.", code="invalid_purpose", param="purpose", type="x_error")
    )
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT and status.details == "Bad purpose."
    key, value = status.trailing_metadata[0]
    assert key == "grpc-status-details-bin"
    decoded = status_pb2.Status.FromString(value)
    info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    decoded.details[0].Unpack(info)
    decoded.details[1].Unpack(bad)
    assert (info.reason, info.domain, dict(info.metadata)) == (
        "INVALID_PURPOSE",
        "tunegate",
        {"type": "x_error"},
    )
    assert (bad.field_violations[0].field, bad.field_violations[0].description) == ("purpose", "Bad purpose.")

    limited = status_pb2.Status.FromString(
        to_status(ResourceExhausted("Slow down.", retry_after=1.5)).trailing_metadata[0][1]
    )
    retry = error_details_pb2.RetryInfo()
    assert limited.details[-1].Unpack(retry)
    assert retry.retry_delay.ToMilliseconds() == 1500
    with pytest.raises(ValueError):
        InvalidArgument("x", code="Not-Snake")


def test_owner_and_ids() -> None:
    a = owner_from_metadata([("authorization", "Bearer tok")])
    assert a.startswith("key:") and len(a) == 36 and "tok" not in a
    assert owner_from_metadata([("api-key", "tok")]) == a
    assert owner_from_metadata([("authorization", "Basic tok")]) == "default"
    assert owner_from_metadata(None) == "default"
    file_id = new_id(FILE_PREFIX)
    assert is_well_formed(file_id, FILE_PREFIX) and not is_well_formed(file_id + "x", FILE_PREFIX)
    assert not is_well_formed("file-../../etc/passwd/aaaaaa", FILE_PREFIX)
