"""Resolving a call's provider `Account` from its metadata (Portkey's conventions). Sans-IO."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol
from urllib.parse import urlsplit

from tunegate.server.errors import FailedPrecondition, InvalidArgument
from tunegate.server.owner import credential_from_authorization
from tunegate.server.providers.interface import Account
from tunegate.server.routing._config import (
    AZURE_DEFAULT_API_VERSION,
    BEDROCK,
    CALL_OPTIONS,
    LOCAL_PROVIDER,
    PROVIDER_OPTIONS,
    VERTEX,
    VERTEX_DEFAULT_BASE_URL,
    VERTEX_GLOBAL_BASE_URL,
    ProviderSettings,
    RoutingConfig,
    VirtualKey,
    canonical_provider,
    check_option,
    encode_aws_secret,
    parse_allowed_host,
)

__all__ = ["Router", "metadata_dict", "non_route_options"]

AZURE = "azure-openai"
CONFIG_HEADER = "x-portkey-config"

# Route fields, the header that carries each (`param` of its errors), and its other spellings
# in `x-portkey-config` / body options (keys are normalised to snake_case first).
_FIELD_HEADERS: Mapping[str, tuple[str, ...]] = {
    "provider": ("x-portkey-provider",),
    "virtual_key": ("x-portkey-virtual-key",),
    "api_key": (),  # `x-portkey-api-key` is the *gateway* key (the tenant), never a provider's
    "custom_host": ("x-portkey-custom-host",),
    "resource_name": ("x-portkey-azure-resource-name",),
    "deployment_id": ("x-portkey-azure-deployment-id",),
    "api_version": ("x-portkey-azure-api-version",),
    "organization": ("x-portkey-openai-organization", "openai-organization"),
    "project": ("x-portkey-openai-project", "openai-project"),
    "region": ("x-portkey-aws-region", "x-portkey-vertex-region"),
    "project_id": ("x-portkey-vertex-project-id",),
    "account_id": ("x-portkey-fireworks-account-id",),
    "aws_access_key_id": ("x-portkey-aws-access-key-id",),
    "aws_secret_access_key": ("x-portkey-aws-secret-access-key",),
    "aws_session_token": ("x-portkey-aws-session-token",),
    "auth_type": ("x-portkey-aws-auth-type",),
    "aws_role_arn": ("x-portkey-aws-role-arn",),
    "external_id": ("x-portkey-aws-external-id",),
    "s3_bucket": ("x-portkey-aws-s3-bucket",),
    "s3_object_key": ("x-portkey-aws-s3-object-key",),
    "bedrock_model": ("x-portkey-aws-bedrock-model",),
    "server_side_encryption": ("x-portkey-amz-server-side-encryption",),
    "kms_key_id": ("x-portkey-amz-server-side-encryption-aws-kms-key-id",),
    "storage_bucket": ("x-portkey-vertex-storage-bucket-name",),
    "service_account_json": ("x-portkey-vertex-service-account-json",),
}
_KEY_ALIASES: Mapping[str, str] = {
    "azure_resource_name": "resource_name",
    "azure_deployment_id": "deployment_id",
    "azure_api_version": "api_version",
    "openai_organization": "organization",
    "openai_project": "project",
    "aws_region": "region",
    "vertex_region": "region",
    "vertex_project_id": "project_id",
    "fireworks_account_id": "account_id",
    # Portkey's config spellings of the AWS fields (camelCase, snake_cased first).
    "aws_auth_type": "auth_type",
    "aws_external_id": "external_id",
    "aws_s3_bucket": "s3_bucket",
    "aws_s3_object_key": "s3_object_key",
    "aws_bedrock_model": "bedrock_model",
    "amz_server_side_encryption": "server_side_encryption",
    "amz_server_side_encryption_kms_key_id": "kms_key_id",
    "amz_server_side_encryption_kmskey_id": "kms_key_id",
    "amz_server_side_encryption_aws_kms_key_id": "kms_key_id",
    "vertex_storage_bucket_name": "storage_bucket",
    "vertex_service_account_json": "service_account_json",
}
# Fields holding a secret: never checked against a pattern or shown in an error.
_SECRET_FIELDS = frozenset({"api_key", "aws_secret_access_key", "aws_session_token", "service_account_json"})
# Portkey config keys that would route a call somewhere this gateway cannot follow.
_UNSUPPORTED_CONFIG_KEYS = ("targets", "strategy")
# Sent by OpenAI's SDK from the environment (`OPENAI_ORG_ID`): ignored where they do not apply.
_LENIENT = frozenset({"organization", "project", "region"})
# Options that do not change which backend (and which of its accounts) serves a call.
_ALL_CALL_OPTIONS = frozenset().union(*CALL_OPTIONS.values())
_NOT_IDENTITY = frozenset({"deployment_id", "auth"}) | _ALL_CALL_OPTIONS
_BACKEND_FIELDS = (
    "resource_name",
    "deployment_id",
    "api_version",
    "organization",
    "project",
    "project_id",
    "account_id",
    "aws_access_key_id",
    "auth_type",
    "aws_role_arn",
    "external_id",
)
_REGION_PARAM = {"bedrock": "x-portkey-aws-region", "vertex-ai": "x-portkey-vertex-region"}
_ROUTE_HEADERS = tuple(header for headers in _FIELD_HEADERS.values() for header in headers)
_SHAPES = 1024
"""How many route shapes a router remembers (see `Router.resolve`)."""
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


def metadata_dict(metadata: Iterable[tuple[str, str | bytes]] | None) -> dict[str, str]:
    """gRPC invocation metadata as a dict: keys lower-cased, the first text value of each key
    kept (binary `-bin` values are skipped) — the same "first wins" rule as `tunegate.server.owner`."""
    result: dict[str, str] = {}
    for key, value in metadata or ():
        if isinstance(value, str):
            result.setdefault(key.lower(), value)
    return result


def _key_file_project(raw: str) -> str | None:
    """The `project_id` a Vertex key file (JSON text) names, when it is a usable one."""
    try:
        document = json.loads(raw)
    except ValueError:
        return None
    project = document.get("project_id") if isinstance(document, dict) else None
    if isinstance(project, str) and check_option("project_id", project.strip()):
        return project.strip()
    return None


def normalise_key(key: str) -> str:
    """A config / body option's key as a route field: snake_case, aliases resolved, and a header
    name (`x-portkey-virtual-key`, as Portkey's docs put them in `portkey_options`) read as the
    field its header carries. `x-portkey-api-key` is the gateway key, never a route field."""
    snake = _CAMEL.sub("_", key.strip()).lower().replace("-", "_")
    if snake.startswith("x_portkey_"):
        header = key.strip().lower()
        found = next((name for name, headers in _FIELD_HEADERS.items() if header in headers), None)
        if found is not None:
            return found
        snake = "gateway_api_key" if snake == "x_portkey_api_key" else snake.removeprefix("x_portkey_")
    return _KEY_ALIASES.get(snake, snake)


def non_route_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """A create body's `provider_options` without what routing reads (provider, credentials,
    regions, buckets, …): the settings left for the adapter, e.g. Bedrock's `model` and
    `role_arn`, under snake_case keys."""
    kept: dict[str, Any] = {}
    for key, value in (options or {}).items():
        name = normalise_key(str(key))
        if name not in _FIELD_HEADERS and name not in _UNSUPPORTED_CONFIG_KEYS:
            kept[name] = value
    return kept


STORED_KEY_PREFIX = "svk:"
"""The account key of a stored virtual key: `svk:<owner>:<slug>`."""


class StoredKeys(Protocol):
    """Virtual keys held in the gateway's database (`tunegate.server.auth.StoredVirtualKeys`)."""

    def for_call(self, metadata: Mapping[str, str], slug: str) -> tuple[VirtualKey, str, str] | None:
        """(the key, its credential, its account key) for the calling owner's `slug`, or None."""
        ...

    def for_account(self, account_key: str) -> tuple[VirtualKey, str] | None:
        """(the key, its credential) of a `svk:` account key, or None once it is deleted."""
        ...


@dataclass(frozen=True, slots=True)
class _Value:
    value: str
    source: str
    """Where it came from, used as `param`: a header name, `x-portkey-config`, `provider_options.x`."""


class _Route:
    """The route fields a request gives, merged across its sources; a field given twice with
    different values is a contradiction, never silently resolved."""

    def __init__(self) -> None:
        self.fields: dict[str, _Value] = {}

    def add(self, name: str, raw: object, source: str) -> None:
        if raw is None:
            return
        if name == "service_account_json" and isinstance(raw, dict):
            raw = json.dumps(raw)  # Portkey's config carries the key file as an object
        if not isinstance(raw, str):
            raise InvalidArgument(f"{source}: '{name}' must be a string.", param=source)
        value = raw.strip()
        if not value:  # Portkey's SDK sends empty headers for unset options
            return
        if name == "provider":
            value = canonical_provider(value)
        elif name == "custom_host":
            value = value.rstrip("/")
        elif name not in _SECRET_FIELDS and name != "virtual_key" and not check_option(name, value):
            raise InvalidArgument(
                f"{source}: invalid {name} {value!r}.", code="invalid_provider_option", param=source
            )
        previous = self.fields.get(name)
        if previous is None:
            self.fields[name] = _Value(value, source)
        elif previous.value != value:
            shown = "" if name in _SECRET_FIELDS else f" ({previous.value!r} vs {value!r})"
            raise InvalidArgument(
                f"{previous.source} and {source} name different {name.replace('_', ' ')}s{shown}.",
                code="conflicting_route",
                param=_field_param(name),
            )

    def get(self, name: str) -> str | None:
        found = self.fields.get(name)
        return found.value if found else None

    def source(self, name: str) -> str:
        found = self.fields.get(name)
        return found.source if found else _field_param(name)


def _field_param(name: str) -> str:
    headers = _FIELD_HEADERS.get(name, ())
    return headers[0] if headers else CONFIG_HEADER


def _parse_config(raw: str) -> Mapping[str, Any]:
    try:
        document = json.loads(raw)
    except ValueError:
        if not raw.startswith(("{", "[")):
            raise InvalidArgument(
                "x-portkey-config names a saved config; saved configs are not supported. "
                "Send the config itself as JSON.",
                code="saved_config_not_supported",
                param=CONFIG_HEADER,
            ) from None
        raise InvalidArgument(
            "x-portkey-config is not valid JSON.", code="invalid_portkey_config", param=CONFIG_HEADER
        ) from None
    if not isinstance(document, dict):
        raise InvalidArgument(
            "x-portkey-config must be a JSON object.", code="invalid_portkey_config", param=CONFIG_HEADER
        )
    return document


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"))
"""Canonical JSON for fingerprints (one encoder: `json.dumps` with options builds one per call)."""


def _fingerprint(*parts: object) -> str:
    canonical = _CANONICAL.encode(parts)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


def _expand(template: str, values: Mapping[str, str | None]) -> str | None:
    """`template` with its `{placeholder}`s filled; None when a needed value is missing."""
    missing = False

    def fill(match: re.Match[str]) -> str:
        nonlocal missing
        value = values.get(match.group(1))
        if value is None:
            missing = True
            return ""
        return value

    expanded = re.sub(r"\{([a-z_]+)\}", fill, template)
    return None if missing else expanded


def _credential_headers(metadata: Mapping[str, str]) -> tuple[str | None, str | None]:
    """The credentials a call's headers carry: `Authorization`'s and `api-key`'s."""
    bearer = credential_from_authorization(metadata.get("authorization", ""))
    return bearer, metadata.get("api-key", "").strip() or None


def _header_credential(
    bearer: str | None, api_key: str | None, provider: str | None
) -> tuple[str | None, str]:
    """Which header credential a call to `provider` uses, and how Azure sends it (see
    `Router._credential`)."""
    if provider == AZURE and api_key is not None:
        return api_key, "api_key"
    if bearer is not None:
        return bearer, "bearer" if _JWT.fullmatch(bearer) else "api_key"
    return api_key, "api_key"


def _per_request_account(
    provider: str, base_url: str, credential: str, region: str | None, options: Mapping[str, str]
) -> Account:
    """An account called with the request's own credential; its key fingerprints the credential
    and everything that picks the backend."""
    identity = {k: v for k, v in options.items() if k not in _NOT_IDENTITY}
    fingerprint = _fingerprint(credential, base_url, region, identity)
    return Account(
        provider=provider,
        key=f"{provider}:key:{fingerprint}",
        base_url=base_url,
        credential=credential,
        region=region,
        options=options,
    )


class _Shape:
    """A resolved per-request account without its credential (see `Router.resolve`)."""

    __slots__ = ("base_url", "options", "provider", "region")

    def __init__(self, account: Account) -> None:
        self.provider = account.provider
        self.base_url = account.base_url
        self.region = account.region
        self.options = MappingProxyType(dict(account.options))  # shared by the accounts made

    def account(self, credential: str) -> Account:
        return _per_request_account(self.provider, self.base_url, credential, self.region, self.options)


class Router:
    """Turns a call's metadata (and a create body's provider options) into a provider `Account`.

    Pure: no I/O apart from reading `env` (virtual keys' secrets). Safe to share.
    """

    def __init__(
        self,
        config: RoutingConfig,
        env: Mapping[str, str] = os.environ,
        stored: StoredKeys | None = None,
    ) -> None:
        self.config = config
        self._env = env
        self.stored = stored
        """Virtual keys held in the gateway's database, per owner (`tunegate.server.auth`)."""
        self._allowed_hosts = frozenset(parse_allowed_host(entry) for entry in config.allowed_custom_hosts)
        self._shapes: dict[tuple[object, ...], _Shape | None] = {}

    def resolve(
        self,
        metadata: Mapping[str, str],
        body_options: Mapping[str, Any] | None = None,
        *,
        provider_hint: str | None = None,
        body_param: str = "provider_options",
    ) -> Account | None:
        """The account a call routes to, or None when the call names no provider.

        A client sends the same routing headers on every call, so for calls routed by headers
        alone (no `x-portkey-config`, no body options) the outcome is remembered by its *shape*:
        the route headers, the hint, and which credential headers are present (and whether the
        bearer is a JWT). A remembered shape holds the account without its credential; each
        call still reads its own credential and derives the account key from it. Virtual keys
        (their secret comes from the environment), `local` and errors are never remembered.
        """
        if body_options or metadata.get(CONFIG_HEADER, "").strip():
            return self._resolve(metadata, body_options, provider_hint, body_param)
        bearer, api_key = _credential_headers(metadata)
        jwt = bearer is not None and _JWT.fullmatch(bearer) is not None
        headers = map(metadata.get, _ROUTE_HEADERS)
        key = (provider_hint, bearer is not None, jwt, api_key is not None, *headers)
        try:
            shape = self._shapes[key]
        except KeyError:
            account = self._resolve(metadata, None, provider_hint, body_param)
            self._remember(key, account)
            return account
        if shape is None:
            return None
        credential, _auth = _header_credential(bearer, api_key, shape.provider)
        assert credential is not None  # the shape says which header holds one
        return shape.account(credential)

    def _remember(self, key: tuple[object, ...], account: Account | None) -> None:
        if account is not None and (
            account.from_virtual_key or account.key == LOCAL_PROVIDER or account.provider in (BEDROCK, VERTEX)
        ):
            return  # (their credentials are not (only) in the headers a shape reads)
        if len(self._shapes) >= _SHAPES:
            del self._shapes[next(iter(self._shapes))]  # the oldest
        self._shapes[key] = None if account is None else _Shape(account)

    def _resolve(
        self,
        metadata: Mapping[str, str],
        body_options: Mapping[str, Any] | None,
        provider_hint: str | None,
        body_param: str,
    ) -> Account | None:
        """`resolve` without remembering.

        `metadata` has lower-case keys (see `metadata_dict`). `body_options` are a create body's
        `portkey_options` / `provider_options` (errors name them `<body_param>.<key>`).
        `provider_hint` (the provider of an existing object) is used when the call carries a
        credential but names no provider — e.g. the plain OpenAI SDK retrieving a job; the
        caller compares the resulting `account.key` with the one stored beside the object.
        With no provider named and no hint the result is None: the caller decides (list the
        registry, or call `resolve` again with its default provider as the hint). A `local`
        hint needs no credential: it resolves to the local account unless the call gives
        provider options that would need a provider named.

        Raises `InvalidArgument` (with the header in `param`) for an unknown provider or
        virtual key, a refused custom host, missing credentials, contradictory sources or a
        malformed option; `FailedPrecondition` (`virtual_key_misconfigured`) when a virtual
        key's environment variable is unset.
        """
        route = self._collect(metadata, body_options, body_param)

        vk_name = route.get("virtual_key")
        if vk_name is not None:
            found = None if self.stored is None else self.stored.for_call(metadata, vk_name)
            if found is not None:
                stored_key, stored_secret, stored_account = found
                return self._with_virtual_key(stored_key, route, stored_secret, stored_account)
            key = self.config.virtual_keys.get(vk_name)
            if key is None:
                raise InvalidArgument(
                    f"Unknown virtual key {vk_name!r}.",
                    code="unknown_virtual_key",
                    param=route.source("virtual_key"),
                )
            return self._with_virtual_key(key, route)

        provider = route.get("provider")
        if provider is None:
            hint = canonical_provider(provider_hint) if provider_hint else None
            given = sorted(name for name in route.fields if name not in _LENIENT | _SECRET_FIELDS)
            if hint == LOCAL_PROVIDER and not given:
                return self._local()  # needs no credential
            if hint == BEDROCK:
                has_credential = route.get("aws_access_key_id") is not None
            elif hint == VERTEX and route.get("service_account_json") is not None:
                has_credential = True
            else:
                has_credential = self._credential(metadata, route, hint)[0] is not None
            if has_credential and hint in self.config.provider_names:
                provider = hint
            else:
                if given:
                    raise InvalidArgument(
                        f"{route.source(given[0])} was given without a provider; "
                        "add x-portkey-provider (or a virtual key).",
                        code="missing_provider",
                        param="x-portkey-provider",
                    )
                return None
        elif provider not in self.config.provider_names:
            known = ", ".join(sorted(self.config.provider_names))
            raise InvalidArgument(
                f"Unknown provider {provider!r}; this gateway routes to: {known}.",
                code="unknown_provider",
                param=route.source("provider"),
            )

        if provider == LOCAL_PROVIDER:
            return self._local()
        credential: str | None
        vertex_project: str | None = None
        if provider == BEDROCK:
            credential, auth = self._aws_credential(route), "aws"
        elif provider == VERTEX and route.get("service_account_json") is not None:
            credential, vertex_project = self._service_account(route)
            auth = "service_account"
        else:
            credential, auth = self._credential(metadata, route, provider)
        if credential is None:
            raise InvalidArgument(
                f"No credentials for {provider}: send 'Authorization: Bearer <{provider} key>' "
                "(or 'api-key'), or use a virtual key.",
                code="missing_credentials",
                param="authorization",
            )
        settings = self.config.providers[provider]
        options = self._options(provider, route)
        if provider == AZURE:
            options.setdefault("api_version", settings.api_version or AZURE_DEFAULT_API_VERSION)
            options["auth"] = auth
        elif provider == BEDROCK:
            options = {**settings.options, **options}
            self._check_aws_auth(options)
        elif provider == VERTEX:
            options = {**settings.options, **options, "auth": auth if auth == "service_account" else "bearer"}
            if "project_id" not in options:
                if vertex_project is None:
                    raise InvalidArgument(
                        "The vertex-ai provider needs a project: x-portkey-vertex-project-id, or a "
                        "service account key file that names one.",
                        code="missing_provider_option",
                        param="x-portkey-vertex-project-id",
                    )
                options["project_id"] = vertex_project
        region = route.get("region")
        custom_host = route.get("custom_host")
        if custom_host is not None:
            base_url = self._check_custom_host(custom_host, route.source("custom_host"))
        else:
            base_url = self._base_url(provider, settings, options.get("resource_name"), region)
        return _per_request_account(provider, base_url, credential, region, options)

    def account_for(self, account_key: str) -> Account | None:
        """Rebuilds an account from its stored key alone: `vk:<name>` (a virtual key still in
        the configuration) or `local`. None for per-request keys (their secret is gone) and for
        virtual keys no longer configured. Raises `FailedPrecondition` like `resolve`."""
        if account_key == LOCAL_PROVIDER:
            return self._local()
        if account_key.startswith("vk:"):
            key = self.config.virtual_keys.get(account_key[3:])
            return None if key is None else self._virtual_key_account(key)
        if account_key.startswith(STORED_KEY_PREFIX) and self.stored is not None:
            found = self.stored.for_account(account_key)
            return None if found is None else self._virtual_key_account(found[0], found[1], account_key)
        return None

    # -- sources -------------------------------------------------------------------------------

    def _collect(
        self, metadata: Mapping[str, str], body: Mapping[str, Any] | None, body_param: str
    ) -> _Route:
        route = _Route()
        for name, headers in _FIELD_HEADERS.items():
            for header in headers:
                route.add(name, metadata.get(header), header)
        raw_config = metadata.get(CONFIG_HEADER, "").strip()
        if raw_config:
            self._add_document(route, _parse_config(raw_config), lambda key: CONFIG_HEADER)
        if body:
            self._add_document(route, body, lambda key: f"{body_param}.{key}")
        return route

    @staticmethod
    def _add_document(route: _Route, document: Mapping[str, Any], param: Callable[[str], str]) -> None:
        for key, value in document.items():
            name = normalise_key(str(key))
            if name in _UNSUPPORTED_CONFIG_KEYS:
                raise InvalidArgument(
                    f"Portkey routing strategies ('{key}') are not supported; name one provider.",
                    code="unsupported_portkey_config",
                    param=param(key),
                )
            if name in _FIELD_HEADERS:
                route.add(name, value, param(key))
            # Other keys (Portkey's `retry`, `cache`, `metadata`, …) do not affect routing.

    @staticmethod
    def _credential(
        metadata: Mapping[str, str], route: _Route, provider: str | None
    ) -> tuple[str | None, str]:
        """The per-request credential and how Azure should send it (`api_key` or `bearer`).

        An explicit `api_key` (config or body) wins over headers, because OpenAI's SDK always
        sends `Authorization` (often a placeholder when the key travels elsewhere). Between the
        headers, Azure prefers `api-key` (its own style), the others `Authorization`. Portkey's
        SDK sends Azure *keys* as `Authorization: Bearer`, so a bearer value is only treated as
        an Entra ID token when it is shaped like one (a JWT).
        """
        explicit = route.get("api_key")
        if explicit is not None:
            return explicit, "api_key"
        return _header_credential(*_credential_headers(metadata), provider)

    @staticmethod
    def _aws_credential(route: _Route) -> str:
        """A Bedrock call's own AWS credential (`encode_aws_secret`): an access key id and secret
        access key, and a session token for temporary credentials. One without the other is a 400
        naming the missing header."""
        key_id = route.get("aws_access_key_id")
        secret = route.get("aws_secret_access_key")
        if key_id is None or secret is None:
            missing = "aws_secret_access_key" if key_id is not None else "aws_access_key_id"
            raise InvalidArgument(
                f"No AWS credentials for bedrock: send '{_field_param('aws_access_key_id')}' and "
                f"'{_field_param('aws_secret_access_key')}' (and '{_field_param('aws_session_token')}' "
                "for temporary credentials), or use a virtual key.",
                code="missing_credentials",
                param=_field_param(missing),
            )
        return encode_aws_secret(secret, route.get("aws_session_token"))

    @staticmethod
    def _service_account(route: _Route) -> tuple[str, str | None]:
        """The Vertex key file a call carries (its JSON text, checked to be an object; the
        provider checks its fields) and the project it names."""
        raw = route.get("service_account_json")
        assert raw is not None
        try:
            document = json.loads(raw)
        except ValueError:
            document = None
        if not isinstance(document, dict):
            raise InvalidArgument(
                f"{route.source('service_account_json')} is not a service account key file (a JSON object).",
                code="invalid_service_account",
                param=route.source("service_account_json"),
            )
        return raw, _key_file_project(raw)

    @staticmethod
    def _check_aws_auth(options: Mapping[str, str]) -> None:
        if options.get("auth_type") == "assumedRole" and not options.get("aws_role_arn"):
            raise InvalidArgument(
                "x-portkey-aws-auth-type 'assumedRole' needs the role to assume in x-portkey-aws-role-arn.",
                code="missing_provider_option",
                param="x-portkey-aws-role-arn",
            )

    def _options(self, provider: str, route: _Route) -> dict[str, str]:
        allowed = PROVIDER_OPTIONS.get(provider, frozenset()) | CALL_OPTIONS.get(provider, frozenset())
        options: dict[str, str] = {}
        for name in (*_BACKEND_FIELDS, *sorted(_ALL_CALL_OPTIONS)):
            value = route.get(name)
            if value is None:
                continue
            if name in allowed:
                options[name] = value
            elif name not in _LENIENT:
                raise InvalidArgument(
                    f"{route.source(name)} does not apply to the {provider} provider.",
                    code="conflicting_route",
                    param=route.source(name),
                )
        return options

    # -- accounts ------------------------------------------------------------------------------

    def _base_url(
        self, provider: str, settings: ProviderSettings, resource_name: str | None, region: str | None
    ) -> str:
        if provider == VERTEX and region == "global" and settings.base_url == VERTEX_DEFAULT_BASE_URL:
            return VERTEX_GLOBAL_BASE_URL
        base_url = _expand(settings.base_url, {"resource_name": resource_name, "region": region})
        if base_url is not None:
            return base_url
        if resource_name is None and "{resource_name}" in settings.base_url:
            param, what = "x-portkey-azure-resource-name", "a resource name"
        else:
            param, what = _REGION_PARAM.get(provider, "x-portkey-provider"), "a region"
        raise InvalidArgument(
            f"The {provider} provider needs {what} ({param}) or a custom host.",
            code="missing_provider_option",
            param=param,
        )

    def check_custom_host(self, url: str, param: str) -> str:
        """`url` as a base URL if its `host[:port]` is allow-listed; else `InvalidArgument`."""
        return self._check_custom_host(url, param)

    def _check_custom_host(self, url: str, param: str) -> str:
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            port = -1
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or port == -1
            or parts.username is not None
            or parts.fragment
        ):
            raise InvalidArgument(
                "x-portkey-custom-host must be an http:// or https:// URL without credentials.",
                code="invalid_custom_host",
                param=param,
            )
        host = parts.hostname.lower()
        effective_port = port if port is not None else (443 if parts.scheme == "https" else 80)
        if (host, None) not in self._allowed_hosts and (host, effective_port) not in self._allowed_hosts:
            raise InvalidArgument(
                f"Custom host {parts.netloc!r} is not allowed on this gateway "
                "(the operator lists permitted hosts in allowed_custom_hosts).",
                code="custom_host_not_allowed",
                param=param,
            )
        return url

    def _local(self) -> Account:
        settings = self.config.providers.get(LOCAL_PROVIDER)
        return Account(
            provider=LOCAL_PROVIDER,
            key=LOCAL_PROVIDER,
            base_url=settings.base_url if settings else "",
            credential="",
        )

    def _with_virtual_key(
        self, key: VirtualKey, route: _Route, credential: str | None = None, account_key: str | None = None
    ) -> Account:
        provider = route.get("provider")
        if provider is not None and provider != key.provider:
            raise InvalidArgument(
                f"{route.source('provider')} names {provider!r} but virtual key {key.name!r} "
                f"is for {key.provider!r}.",
                code="conflicting_route",
                param="x-portkey-provider",
            )
        for secret in sorted(_SECRET_FIELDS):
            if route.get(secret) is not None:
                raise InvalidArgument(
                    f"{route.source(secret)} gives a credential, but virtual key {key.name!r} "
                    "carries its own.",
                    code="conflicting_route",
                    param="x-portkey-virtual-key",
                )
        account = self._virtual_key_account(key, credential, account_key)
        # The virtual key fixes the backend, so `vk:<name>` alone rebuilds it later: a request
        # may repeat its settings but not change them.
        fixed: dict[str, str | None] = {
            "custom_host": account.base_url,
            "region": account.region,
            **{name: account.options.get(name) for name in _BACKEND_FIELDS},
        }
        for name, value in fixed.items():
            given = route.get(name)
            if given is None or given == value or (name in _LENIENT and name != "region"):
                continue
            raise InvalidArgument(
                f"{route.source(name)} conflicts with virtual key {key.name!r}, which fixes "
                f"{name.replace('_', ' ')} to {value!r}.",
                code="conflicting_route",
                param=route.source(name),
            )
        call_options = CALL_OPTIONS.get(key.provider, frozenset())
        if call_options:
            # Per-call settings (bucket, key prefix, model, encryption) the key leaves unset.
            added = {
                name: value
                for name in sorted(call_options)
                if (value := route.get(name)) is not None and name not in key.options
            }
            conflicting = [
                name
                for name in sorted(call_options)
                if route.get(name) is not None
                and name in key.options
                and route.get(name) != key.options[name]
            ]
            if conflicting:
                name = conflicting[0]
                raise InvalidArgument(
                    f"{route.source(name)} conflicts with virtual key {key.name!r}, which fixes "
                    f"{name.replace('_', ' ')} to {key.options[name]!r}.",
                    code="conflicting_route",
                    param=route.source(name),
                )
            if added:
                account = dataclasses.replace(account, options={**account.options, **added})
        return account

    def _virtual_key_account(
        self, key: VirtualKey, stored_credential: str | None = None, account_key: str | None = None
    ) -> Account:
        """The account of a configured virtual key (its secret from the environment), or of a
        stored one (`stored_credential`, under `account_key`)."""
        account_key = account_key or f"vk:{key.name}"
        if key.provider == LOCAL_PROVIDER:
            local = self._local()
            return Account(
                provider=LOCAL_PROVIDER,
                key=account_key,
                base_url=key.base_url or local.base_url,
                credential="",
                from_virtual_key=True,
            )
        settings = self.config.providers[key.provider]
        if stored_credential is not None:
            credential = stored_credential
        elif key.api_key_env is None:
            assert key.provider == BEDROCK  # VirtualKey guarantees it for every other provider
            credential = ""  # the gateway's own AWS credentials (botocore's default chain)
        else:
            credential = self._env.get(key.api_key_env, "").strip()
        if not credential and key.api_key_env is not None:
            raise FailedPrecondition(
                f"Virtual key {key.name!r} is misconfigured: environment variable "
                f"{key.api_key_env} is not set on the gateway.",
                code="virtual_key_misconfigured",
            )
        options = dict(key.options)
        if key.provider in (BEDROCK, VERTEX):
            options = {**settings.options, **options}
        if key.provider == VERTEX:
            options.setdefault("auth", "service_account" if credential.lstrip().startswith("{") else "bearer")
            if "project_id" not in options and options["auth"] == "service_account":
                project = _key_file_project(credential)
                if project is None:
                    raise FailedPrecondition(
                        f"Virtual key {key.name!r} is misconfigured: it names no project_id and its "
                        "key file names none either.",
                        code="virtual_key_misconfigured",
                    )
                options["project_id"] = project
        if key.provider == AZURE:
            options.setdefault("api_version", settings.api_version or AZURE_DEFAULT_API_VERSION)
            options.setdefault("auth", "api_key")
        base_url = key.base_url or _expand(
            settings.base_url, {"resource_name": options.get("resource_name"), "region": key.region}
        )
        if base_url is None:
            raise FailedPrecondition(
                f"Virtual key {key.name!r} is misconfigured: the {key.provider} provider needs "
                "resource_name/region or a base_url.",
                code="virtual_key_misconfigured",
            )
        return Account(
            provider=key.provider,
            key=account_key,
            base_url=base_url,
            credential=credential,
            region=key.region,
            options=options,
            from_virtual_key=True,
        )
