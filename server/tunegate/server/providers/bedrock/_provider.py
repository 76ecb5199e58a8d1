"""The Bedrock adapter: OpenAI's fine-tuning API on AWS Bedrock model customization.

One account is one AWS identity in one region (see `tunegate.server.routing`): the call's access
key (+ session token), or a virtual key's (or the gateway's own default chain), optionally
exchanged through STS for a role (`auth_type: assumedRole`, `aws_role_arn`, `external_id`).
Every AWS service a call uses (Bedrock, Bedrock runtime, S3, STS) is reached at AWS's own
endpoints for the region, or — when the account's base URL is anything but
`https://bedrock.{region}.amazonaws.com` (configuration or `x-portkey-custom-host`) — at that one
URL, with S3 addressed path-style, so a single local emulator can stand in for all of them.

What a create does (`Capability.STAGED_FILES`):

1. `check_request` settles everything before any cost: the model id to submit
   (`provider_options.model`, else `x-portkey-aws-bedrock-model`, else `model`), its family
   (`_convert.FAMILIES`), the method, the hyperparameters (mapped and range-checked per family),
   the bucket, the role the job runs as (body `role_arn`, `provider_options.role_arn`, the
   configured `job_role_arn`, or a non-assumed `x-portkey-aws-role-arn`), SSE settings.
2. The registry stages each gateway file through `stage_file`: converted to the family's format
   while it streams into `s3://<bucket>/<prefix><file id>.<family>.jsonl` (multipart, SSE applied,
   aborted on failure), once per (file, family, bucket, prefix) — `staging_key`.
3. `create_job` sends `CreateModelCustomizationJob` with `jobName`/`clientRequestToken` from the
   gateway job id and the id in `jobTags`; `find_job_by_tag` gets the job by that name and checks
   the tag. A `training_file` that is not a gateway file must be an `s3://` URI already in the
   family's format.

Jobs read back through `_jobs` (statuses, hyperparameters, events); a succeeded job lists one
result file, `bedrock-results-<job name>`, which `download_file` builds from the metrics Bedrock
writes to the output location. Chat goes to Converse / ConverseStream (`_converse`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError
from tunegate.server.errors import InvalidArgument, NotFound, TunegateError
from tunegate.server.providers.bedrock import _jobs
from tunegate.server.providers.bedrock._converse import converse_chat
from tunegate.server.providers.bedrock._convert import Family, aconvert_chunks, family_for, require_method
from tunegate.server.providers.bedrock._s3 import (
    DEFAULT_CONCURRENCY,
    DEFAULT_PART_SIZE,
    HEADER_BUCKET,
    HEADER_KEY,
    AwsCredentials,
    MiB,
    ServerSideEncryption,
    _aws_error,
    _config,
    _get_session,
    assume_role,
    upload_stream,
    validate_bucket,
    validate_key,
    validate_region,
)
from tunegate.server.providers.interface import (
    Account,
    Capability,
    ChatReply,
    JobObject,
    Page,
    ProviderDownload,
    ProviderFile,
    unsupported,
)
from tunegate.server.routing._config import BEDROCK, decode_aws_secret

__all__ = ["RESULTS_PREFIX", "BedrockProvider", "BedrockSettings"]

RESULTS_PREFIX = "bedrock-results-"
"""The native id of a job's result file: this prefix and the job name."""
_DEFAULT_HOST = "https://bedrock.{region}.amazonaws.com"
_OPTION_KEYS = frozenset(
    {"model", "role_arn", "customization_type", "vpc_config", "custom_model_kms_key_id", "output_file"}
)
"""The `provider_options` a Bedrock create reads (routing's own keys are removed before)."""
_CUSTOMIZATION_TYPES = frozenset({"FINE_TUNING", "CONTINUED_PRE_TRAINING", "DISTILLATION"})
_NAME_TAKEN = frozenset({"ConflictException", "ResourceInUseException"})
"""Bedrock's error codes for a job name already in use (moto answers the second)."""
_ROLE_REFRESH = 300.0
"""Assumed-role credentials are renewed this many seconds before they expire."""


@dataclass(frozen=True, slots=True)
class BedrockSettings:
    """Upload tuning: S3 part size (≥ 5 MiB) and parts in flight per upload."""

    part_size: int = DEFAULT_PART_SIZE
    concurrency: int = DEFAULT_CONCURRENCY

    @classmethod
    def from_options(cls, options: Mapping[str, str]) -> BedrockSettings:
        """From `[providers.bedrock] options` (`upload_part_size_mib`, `upload_concurrency`)."""
        return cls(
            part_size=int(options.get("upload_part_size_mib") or DEFAULT_PART_SIZE // MiB) * MiB,
            concurrency=int(options.get("upload_concurrency") or DEFAULT_CONCURRENCY),
        )


@dataclass(frozen=True, slots=True)
class _Access:
    """How to reach AWS for one account."""

    credentials: AwsCredentials | None
    """None: botocore's default chain (a virtual key without a secret)."""
    region: str
    endpoint_url: str | None


@dataclass(frozen=True, slots=True)
class _Plan:
    """What a create request means on Bedrock, settled before any cost."""

    model_id: str
    family: Family
    bucket: str
    prefix: str
    sse: ServerSideEncryption | None
    role_arn: str
    customization_type: str
    options: Mapping[str, Any]


def _missing(what: str, param: str) -> InvalidArgument:
    return InvalidArgument(f"Bedrock needs {what}.", code="missing_provider_option", param=param)


class BedrockProvider:
    """`Provider` (plus `StagingProvider` and chat) for AWS Bedrock."""

    name = BEDROCK
    capabilities: frozenset[Capability] = frozenset(
        {
            Capability.CREATE,
            Capability.RETRIEVE,
            Capability.LIST,
            Capability.CANCEL,
            Capability.EVENTS,
            Capability.TAG_LOOKUP,
            Capability.RESULT_FILES,
            Capability.STAGED_FILES,
            Capability.CHAT,
        }
    )
    pages_by_id = False

    def __init__(self, settings: BedrockSettings | None = None) -> None:
        self.settings = settings or BedrockSettings()
        self._roles: dict[str, AwsCredentials] = {}
        self._role_locks: dict[str, asyncio.Lock] = {}

    async def aclose(self) -> None:
        """Nothing pooled: each call opens and closes its clients."""

    # -- AWS access ----------------------------------------------------------------------------

    async def _access(self, account: Account) -> _Access:
        region = validate_region(account.region or "")
        endpoint = None if account.base_url == _DEFAULT_HOST.format(region=region) else account.base_url
        credentials: AwsCredentials | None = None
        if account.credential:
            secret, token = decode_aws_secret(account.credential)
            credentials = AwsCredentials(account.options.get("aws_access_key_id", ""), secret, token)
        if account.options.get("auth_type") == "assumedRole":
            credentials = await self._assumed(account, credentials, region, endpoint)
        return _Access(credentials, region, endpoint)

    async def _assumed(
        self, account: Account, base: AwsCredentials | None, region: str, endpoint: str | None
    ) -> AwsCredentials:
        """The account's role credentials, assumed once and renewed shortly before expiry."""
        lock = self._role_locks.setdefault(account.key, asyncio.Lock())
        async with lock:
            held = self._roles.get(account.key)
            if (
                held is not None
                and held.expiration is not None
                and held.expiration.timestamp() - time.time() > _ROLE_REFRESH
            ):
                return held
            role = account.options["aws_role_arn"]
            fresh = await assume_role(
                base,
                region=region,
                role_arn=role,
                external_id=account.options.get("external_id"),
                endpoint_url=endpoint,
            )
            self._roles[account.key] = fresh
            return fresh

    @asynccontextmanager
    async def _client(self, service: str, access: _Access, *, max_attempts: int = 5) -> AsyncIterator[Any]:
        """A client for `service`; botocore retries throttling, 5xx and connection errors up to
        `max_attempts` (chat passes 1: a paid call is never sent twice)."""
        creds = access.credentials
        async with _get_session().create_client(
            service,  # type: ignore[call-overload]
            region_name=access.region,
            endpoint_url=access.endpoint_url,
            aws_access_key_id=creds.access_key_id if creds else None,
            aws_secret_access_key=creds.secret_access_key if creds else None,
            aws_session_token=creds.session_token if creds else None,
            config=_config(
                path_style=access.endpoint_url is not None,
                max_pool_connections=max(10, self.settings.concurrency + 1),
                max_attempts=max_attempts,
            ),
        ) as client:
            yield client

    async def _call(self, account: Account, service: str, operation: str, doing: str, **params: Any) -> Any:
        access = await self._access(account)
        try:
            async with self._client(service, access) as client:
                return await getattr(client, operation)(**params)
        except ParamValidationError as exc:
            raise InvalidArgument(f"Bedrock would refuse {doing}: {exc}", code="invalid_value") from exc
        except (ClientError, BotoCoreError) as exc:
            raise _aws_error(exc, doing) from exc

    # -- planning ------------------------------------------------------------------------------

    def _plan(self, account: Account, request: Mapping[str, Any]) -> _Plan:
        options = dict(request.get("provider_options") or {})
        unknown = sorted(set(options) - _OPTION_KEYS)
        if unknown:
            raise InvalidArgument(
                f"provider_options.{unknown[0]} is not a Bedrock setting "
                f"(known: {', '.join(sorted(_OPTION_KEYS))}).",
                code="invalid_value",
                param=f"provider_options.{unknown[0]}",
            )
        if options.get("model"):
            model_id, model_param = str(options["model"]), "provider_options.model"
        elif account.options.get("bedrock_model"):
            model_id, model_param = account.options["bedrock_model"], "x-portkey-aws-bedrock-model"
        else:
            model_id, model_param = str(request.get("model") or ""), "model"
        family = family_for(model_id, param=model_param)
        method = (request.get("method") or {}).get("type") or "supervised"
        require_method(family, method)
        bucket = account.options.get("s3_bucket")
        if not bucket:
            raise _missing(
                "an S3 bucket for training data and results (x-portkey-aws-s3-bucket)", HEADER_BUCKET
            )
        validate_bucket(bucket)
        prefix = account.options.get("s3_object_key", "").strip("/")
        if prefix:
            validate_key(prefix, param=HEADER_KEY)
            prefix += "/"
        sse = ServerSideEncryption.parse(
            account.options.get("server_side_encryption"), account.options.get("kms_key_id")
        )
        role = (
            request.get("role_arn")
            or options.get("role_arn")
            or account.options.get("job_role_arn")
            or (
                account.options.get("aws_role_arn")
                if account.options.get("auth_type") != "assumedRole"
                else None
            )
        )
        if not role:
            raise _missing(
                "the IAM role the job runs as: 'role_arn' in the body or provider_options "
                "(or job_role_arn in the gateway's configuration)",
                "role_arn",
            )
        customization = str(options.get("customization_type") or "FINE_TUNING")
        if customization not in _CUSTOMIZATION_TYPES:
            raise InvalidArgument(
                "provider_options.customization_type must be one of "
                f"{', '.join(sorted(_CUSTOMIZATION_TYPES))}.",
                code="invalid_value",
                param="provider_options.customization_type",
            )
        return _Plan(model_id, family, bucket, prefix, sse, str(role), customization, options)

    def check_request(self, account: Account, request: Mapping[str, Any]) -> None:
        """Everything `_plan` settles, and the family's hyperparameter ranges."""
        plan = self._plan(account, request)
        _jobs.hyperparameters_for(plan.family, request)

    # -- staging -------------------------------------------------------------------------------

    def staging_key(self, account: Account, request: Mapping[str, Any]) -> str:
        plan = self._plan(account, request)
        return f"bedrock:{plan.family.name}:s3://{plan.bucket}/{plan.prefix}"

    async def stage_file(
        self,
        account: Account,
        request: Mapping[str, Any],
        *,
        file_id: str,
        filename: str,
        size: int,
        chunks: AsyncIterator[bytes],
        param: str,
    ) -> ProviderFile:
        """Converts the file to the family's format while streaming it into S3."""
        plan = self._plan(account, request)
        if plan.customization_type != "FINE_TUNING":
            raise InvalidArgument(
                f"customization_type {plan.customization_type} reads data the gateway does not convert: "
                f"give '{param}' as an s3:// URI of data already in Bedrock's format.",
                code="invalid_value",
                param=param,
            )
        key = f"{plan.prefix}{file_id}.{plan.family.name}.jsonl"
        access = await self._access(account)
        async with self._client("s3", access) as s3:
            await upload_stream(
                s3,
                bucket=plan.bucket,
                key=key,
                chunks=aconvert_chunks(chunks, plan.family, param=param),
                part_size=self.settings.part_size,
                concurrency=self.settings.concurrency,
                sse=plan.sse,
            )
        return ProviderFile(id=f"s3://{plan.bucket}/{key}", status="processed")

    # -- files (Bedrock has none of its own: see staging) --------------------------------------

    async def upload_file(
        self, account: Account, *, filename: str, purpose: str, size: int, chunks: AsyncIterator[bytes]
    ) -> ProviderFile:
        raise unsupported(self.name, "file uploads (files are converted and staged per job)")

    async def get_file(self, account: Account, file_id: str) -> ProviderFile:
        raise unsupported(self.name, "provider files")

    async def download_file(self, account: Account, file_id: str) -> ProviderDownload:
        """A job's result file (`RESULTS_PREFIX` + job name): OpenAI's results CSV built from
        the metrics Bedrock wrote to the job's output location (or reported on the job)."""
        if not file_id.startswith(RESULTS_PREFIX):
            raise NotFound(f"No such Bedrock result file: {file_id}", code="file_not_found")
        name = file_id[len(RESULTS_PREFIX) :]
        job = await self._get(account, name)
        uris = _jobs.metrics_uris(job)
        access = await self._access(account)
        async with self._client("s3", access) as s3:
            training = await _read_optional(s3, uris.training)
            validation = None
            for uri in uris.validation:  # the documented place first
                validation = await _read_optional(s3, uri)
                if validation is not None:
                    break
        content = _jobs.results_csv(job, training, validation)
        return ProviderDownload(
            filename=f"{name}-results.csv",
            purpose="fine-tune-results",
            content_type="text/csv",
            chunks=_one(content),
        )

    # -- jobs ----------------------------------------------------------------------------------

    async def create_job(self, account: Account, request: Mapping[str, Any], *, tag: str) -> JobObject:
        plan = self._plan(account, request)
        training = _s3_uri(request.get("training_file"), "training_file")
        validation = request.get("validation_file")
        output = plan.options.get("output_file") or f"s3://{plan.bucket}/{plan.prefix}{tag}/output/"
        params, _notes = _jobs.create_params(
            request=request,
            family=plan.family,
            base_model_id=plan.model_id,
            tag=tag,
            role_arn=plan.role_arn,
            training_uri=training,
            validation_uri=_s3_uri(validation, "validation_file") if validation else None,
            output_uri=_s3_uri(output, "provider_options.output_file"),
            kms_key_id=plan.options.get("custom_model_kms_key_id") or account.options.get("kms_key_id"),
            vpc_config=plan.options.get("vpc_config"),
            customization_type=plan.customization_type,
        )
        try:
            await self._call(
                account, "bedrock", "create_model_customization_job", "creating the job", **params
            )
        except TunegateError as exc:
            # A job of this name exists: an earlier attempt of this create reached Bedrock (e.g.
            # botocore resent it after the connection dropped). It is this job if it carries the
            # tag (Bedrock also answers a repeated clientRequestToken with the first job).
            if exc.code not in _NAME_TAKEN:
                raise
            found = await self.find_job_by_tag(account, tag, created_after=0)
            if found is None:
                raise
            return found
        return await self.get_job(account, params["jobName"])

    async def find_job_by_tag(self, account: Account, tag: str, *, created_after: int) -> JobObject | None:
        """The job named after `tag`, if it carries the tag (jobs are named for their tag)."""
        try:
            job = await self._get(account, _jobs.job_name(tag))
        except NotFound:
            return None
        tags = await self._call(
            account, "bedrock", "list_tags_for_resource", "reading the job's tags", resourceARN=job["jobArn"]
        )
        if not any(t.get("key") == _jobs.TAG_KEY and t.get("value") == tag for t in tags.get("tags") or []):
            return None
        return self._job(job)

    async def get_job(self, account: Account, job_id: str) -> JobObject:
        return self._job(await self._get(account, job_id))

    async def list_jobs(self, account: Account, *, limit: int, page_token: str | None) -> Page:
        params: dict[str, Any] = {"maxResults": limit, "sortBy": "CreationTime", "sortOrder": "Descending"}
        if page_token:
            params["nextToken"] = page_token
        answer = await self._call(
            account, "bedrock", "list_model_customization_jobs", "listing jobs", **params
        )
        data = [_jobs.job_from_summary(s) for s in answer.get("modelCustomizationJobSummaries") or []]
        token = answer.get("nextToken")
        return Page(data, bool(token and data), token if data else None)

    async def cancel_job(self, account: Account, job_id: str) -> JobObject:
        await self._call(
            account, "bedrock", "stop_model_customization_job", "stopping the job", jobIdentifier=job_id
        )
        return await self.get_job(account, job_id)

    async def pause_job(self, account: Account, job_id: str) -> JobObject:
        raise unsupported(self.name, "pausing jobs")

    async def resume_job(self, account: Account, job_id: str) -> JobObject:
        raise unsupported(self.name, "resuming jobs")

    async def list_events(self, account: Account, job_id: str, *, limit: int, page_token: str | None) -> Page:
        """Events derived from the job's status, stages and metrics, newest first."""
        job = await self._get(account, job_id)
        events = _jobs.events_from_bedrock(job, _hyperparameter_notes(job))
        return Page.sliced(events, limit, page_token)

    async def list_checkpoints(
        self, account: Account, job_id: str, *, limit: int, page_token: str | None
    ) -> Page:
        raise unsupported(self.name, "checkpoints")

    async def _get(self, account: Account, job_id: str) -> dict[str, Any]:
        answer: dict[str, Any] = await self._call(
            account, "bedrock", "get_model_customization_job", "reading the job", jobIdentifier=job_id
        )
        answer.pop("ResponseMetadata", None)
        return answer

    def _job(self, job: Mapping[str, Any]) -> JobObject:
        rendered = _jobs.job_from_bedrock(job, family=_family_of(job))
        if rendered.get("status") == "succeeded":
            rendered["result_files"] = [RESULTS_PREFIX + str(job["jobName"])]
        return rendered

    # -- chat ----------------------------------------------------------------------------------

    async def chat(self, account: Account, body: bytes, *, model: str, stream: bool) -> ChatReply:
        """Converse / ConverseStream on `x-portkey-aws-bedrock-model` when given (a provisioned
        throughput or deployment of the tuned model), else on `model`."""
        model_id = account.options.get("bedrock_model") or model
        if ":custom-model/" in model_id:
            raise InvalidArgument(
                f"'{model_id}' is a custom model: Bedrock serves it only through provisioned "
                "throughput or an on-demand deployment. Send that ARN as 'model' (or in "
                "x-portkey-aws-bedrock-model).",
                code="model_not_deployed",
                param="model",
            )
        access = await self._access(account)
        stack = AsyncExitStack()
        client = await stack.enter_async_context(self._client("bedrock-runtime", access, max_attempts=1))
        try:
            reply = await converse_chat(client, body, model_id=model_id, stream=stream)
        except BaseException:
            await stack.aclose()
            raise
        chunks = _ClosingChunks(reply.chunks, stack)
        return ChatReply(content_type=reply.content_type, chunks=chunks, headers=reply.headers)


class _ClosingChunks:
    """A reply's chunks that close the reply and then its client once read to the end, failed
    or closed — closing works even before the first chunk was asked for."""

    def __init__(self, inner: AsyncIterator[bytes], stack: AsyncExitStack) -> None:
        self._inner = inner
        self._stack = stack

    def __aiter__(self) -> _ClosingChunks:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._inner.__anext__()
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        try:
            close = getattr(self._inner, "aclose", None)
            if close is not None:
                await close()
        finally:
            await self._stack.aclose()


def _hyperparameter_notes(job: Mapping[str, Any]) -> list[str]:
    """What the job's events say about a learning rate converted from OpenAI's multiplier."""
    family = _family_of(job)
    rate = (job.get("hyperParameters") or {}).get("learningRate")
    knob = family.hyperparameters.get("learningRate") if family else None
    if family is None or knob is None or rate is None or knob.openai != "learning_rate_multiplier":
        return []
    multiplier = _jobs.openai_hyperparameters(family, {"learningRate": rate}).get("learning_rate_multiplier")
    return [
        f"learningRate {rate} is learning_rate_multiplier {multiplier} × the {family.name} default "
        f"learning rate {knob.default:g} (OpenAI's multiplier, converted by the gateway)"
    ]


def _family_of(job: Mapping[str, Any]) -> Family | None:
    base = str(job.get("baseModelArn") or job.get("baseModelIdentifier") or "")
    try:
        return family_for(base)
    except InvalidArgument:
        return None


def _s3_uri(value: Any, param: str) -> str:
    if not isinstance(value, str) or not value.startswith("s3://"):
        raise InvalidArgument(
            f"'{param}' must be one of your files (file-…) or an s3:// URI for Bedrock.",
            code="invalid_value",
            param=param,
        )
    return value


async def _read_optional(s3: Any, uri: str) -> bytes | None:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    try:
        answer = await s3.get_object(Bucket=bucket, Key=key)
        async with answer["Body"] as body:
            data: bytes = await body.read()
            return data
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
            return None
        raise _aws_error(exc, f"reading {uri}") from exc


async def _one(content: bytes) -> AsyncIterator[bytes]:
    yield content
