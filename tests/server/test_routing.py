"""Provider routing (`tunegate.server.routing`): metadata and body options → `Account`. No sockets."""

from __future__ import annotations

from typing import Any

import pytest
from tunegate.server.errors import FailedPrecondition, InvalidArgument, TunegateError
from tunegate.server.providers.interface import Account
from tunegate.server.routing import (
    DEFAULT_PROVIDERS,
    ProviderSettings,
    Router,
    RoutingConfig,
    VirtualKey,
    metadata_dict,
)

AZURE_KEY = "azure-secret-0123456789"
TEAM_KEY = "sk-team-secret-0123456789"
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJjb2dzIn0.c2lnbmF0dXJl"

CONFIG = RoutingConfig(
    allowed_custom_hosts=("proxy.internal:8443", "Mirror.Example.com", "tls.internal:443"),
    virtual_keys={
        "team-azure": VirtualKey(
            name="team-azure",
            provider="azure",
            api_key_env="TEAM_AZURE_KEY",
            options={"resource_name": "team-eastus", "api_version": "2024-10-21"},
        ),
        "team-openai": VirtualKey(
            name="team-openai",
            provider="openai",
            api_key_env="TEAM_OPENAI_KEY",
            options={"project": "proj_1"},
        ),
        "unset": VirtualKey(name="unset", provider="openai", api_key_env="NOT_SET_ANYWHERE"),
        "trainer": VirtualKey(name="trainer", provider="local", api_key_env=None),
    },
    providers={
        **DEFAULT_PROVIDERS,
        "bedrock": ProviderSettings(base_url="https://bedrock.{region}.amazonaws.com"),
        "fireworks-ai": ProviderSettings(base_url="https://api.fireworks.ai/v1"),
    },
)
ENV = {"TEAM_AZURE_KEY": AZURE_KEY, "TEAM_OPENAI_KEY": TEAM_KEY}

# What Portkey's Python SDK sends: `Portkey(provider="openai", Authorization="sk-1", base_url=…)`.
PORTKEY_SDK = {
    "x-portkey-provider": "openai",
    "authorization": "Bearer sk-1",
    "x-portkey-api-key": "",
    "x-portkey-strict-open-ai-compliance": "false",
    "x-portkey-package-version": "portkey-2.3.4",
    "x-portkey-runtime": "CPython",
}
OPENAI = {"x-portkey-provider": "openai", "authorization": "Bearer sk-1"}
AZURE = {"x-portkey-provider": "azure-openai", "api-key": "az-1", "x-portkey-azure-resource-name": "res1"}
AZURE_URL = "https://res1.openai.azure.com/openai"


@pytest.fixture
def router() -> Router:
    return Router(CONFIG, env=ENV)


def resolve(
    router: Router,
    metadata: dict[str, str],
    body: dict[str, Any] | None = None,
    hint: str | None = None,
) -> Account:
    account = router.resolve(metadata, body, provider_hint=hint)
    assert account is not None
    return account


ROUTES: list[tuple[str, dict[str, str], dict[str, Any] | None, dict[str, Any]]] = [
    (
        "curl-openai",
        OPENAI,
        None,
        {"provider": "openai", "base_url": "https://api.openai.com/v1", "credential": "sk-1", "options": {}},
    ),
    ("portkey-sdk", PORTKEY_SDK, None, {"provider": "openai", "credential": "sk-1"}),
    (
        "raw-authorization",
        {"x-portkey-provider": "openai", "authorization": "sk-1"},
        None,
        {"credential": "sk-1"},
    ),
    (
        "provider-case",
        {"x-portkey-provider": " OpenAI ", "authorization": "Bearer sk-1"},
        None,
        {"provider": "openai"},
    ),
    (
        "openai-org-project",
        {**OPENAI, "openai-organization": "org_1", "x-portkey-openai-project": "proj_1"},
        None,
        {"options": {"organization": "org_1", "project": "proj_1"}},
    ),
    (
        "azure-api-key",
        AZURE,
        None,
        {
            "provider": "azure-openai",
            "base_url": AZURE_URL,
            "credential": "az-1",
            "options": {"resource_name": "res1", "api_version": "v1", "auth": "api_key"},
        },
    ),
    ("azure-alias", {**AZURE, "x-portkey-provider": "azure"}, None, {"provider": "azure-openai"}),
    (
        "azure-key-as-bearer-portkey-style",
        {
            "x-portkey-provider": "azure-openai",
            "authorization": "Bearer az-2",
            "x-portkey-azure-resource-name": "res1",
        },
        None,
        {"credential": "az-2", "options": {"resource_name": "res1", "api_version": "v1", "auth": "api_key"}},
    ),
    (
        "azure-entra-token",
        {
            "x-portkey-provider": "azure-openai",
            "authorization": f"Bearer {JWT}",
            "x-portkey-azure-resource-name": "res1",
        },
        None,
        {"credential": JWT, "options": {"resource_name": "res1", "api_version": "v1", "auth": "bearer"}},
    ),
    (
        "azure-prefers-api-key-over-sdk-authorization",
        {**AZURE, "authorization": "Bearer placeholder"},
        None,
        {"credential": "az-1"},
    ),
    (
        "azure-dated-version-and-deployment",
        {**AZURE, "x-portkey-azure-api-version": "2024-10-21", "x-portkey-azure-deployment-id": "gpt4o-ft"},
        None,
        {
            "options": {
                "resource_name": "res1",
                "api_version": "2024-10-21",
                "deployment_id": "gpt4o-ft",
                "auth": "api_key",
            }
        },
    ),
    (
        "azure-custom-host-needs-no-resource",
        {
            "x-portkey-provider": "azure-openai",
            "api-key": "az-1",
            "x-portkey-custom-host": "https://proxy.internal:8443/openai/",
        },
        None,
        {
            "base_url": "https://proxy.internal:8443/openai",
            "options": {"api_version": "v1", "auth": "api_key"},
        },
    ),
    (
        "custom-host-any-port-case-insensitive",
        {**OPENAI, "x-portkey-custom-host": "http://MIRROR.example.com:9000/v1"},
        None,
        {"base_url": "http://MIRROR.example.com:9000/v1"},
    ),
    (
        "custom-host-default-https-port",
        {**OPENAI, "x-portkey-custom-host": "https://tls.internal/v1"},
        None,
        {"base_url": "https://tls.internal/v1"},
    ),
    (
        "config-json",
        {
            "authorization": "Bearer placeholder",
            "x-portkey-config": '{"provider": "openai", "api_key": "sk-cfg"}',
        },
        None,
        {"provider": "openai", "credential": "sk-cfg"},
    ),
    (
        "config-json-azure-spellings",
        {
            "x-portkey-config": '{"provider": "azure-openai", "api_key": "az-cfg",'
            ' "azure_resource_name": "res1", "azureApiVersion": "2024-10-21",'
            ' "azure_deployment_id": "dep", "retry": {"attempts": 3}}'
        },
        None,
        {
            "base_url": AZURE_URL,
            "credential": "az-cfg",
            "options": {
                "resource_name": "res1",
                "api_version": "2024-10-21",
                "deployment_id": "dep",
                "auth": "api_key",
            },
        },
    ),
    (
        "config-json-repeats-header",
        {**OPENAI, "x-portkey-config": '{"provider": "openai"}'},
        None,
        {"provider": "openai", "credential": "sk-1"},
    ),
    (
        "body-options",
        {"authorization": "Bearer az-1"},
        {"provider": "azure-openai", "azure-resource-name": "res1", "api_version": "2024-10-21"},
        {
            "provider": "azure-openai",
            "base_url": AZURE_URL,
            "options": {"resource_name": "res1", "api_version": "2024-10-21", "auth": "api_key"},
        },
    ),
    (
        "virtual-key",
        {"x-portkey-virtual-key": "team-azure", "authorization": "Bearer sk-placeholder"},
        None,
        {
            "provider": "azure-openai",
            "key": "vk:team-azure",
            "base_url": "https://team-eastus.openai.azure.com/openai",
            "credential": AZURE_KEY,
            "options": {"resource_name": "team-eastus", "api_version": "2024-10-21", "auth": "api_key"},
            "from_virtual_key": True,
        },
    ),
    (
        "virtual-key-with-agreeing-headers",
        {
            "x-portkey-virtual-key": "team-azure",
            "x-portkey-provider": "azure",
            "x-portkey-azure-resource-name": "team-eastus",
            "x-portkey-azure-api-version": "2024-10-21",
        },
        None,
        {"key": "vk:team-azure"},
    ),
    (
        "virtual-key-ignores-sdk-organization",
        {"x-portkey-virtual-key": "team-openai", "openai-organization": "org_env"},
        None,
        {"key": "vk:team-openai", "credential": TEAM_KEY, "options": {"project": "proj_1"}},
    ),
    (
        "virtual-key-in-config",
        {"x-portkey-config": '{"virtual_key": "team-openai"}'},
        None,
        {"key": "vk:team-openai"},
    ),
    ("virtual-key-in-body", {}, {"virtual_key": "team-openai"}, {"key": "vk:team-openai"}),
    (
        "local-needs-no-credential",
        {"x-portkey-provider": "local"},
        None,
        {"provider": "local", "key": "local", "credential": ""},
    ),
    (
        "local-virtual-key",
        {"x-portkey-virtual-key": "trainer"},
        None,
        {"provider": "local", "key": "vk:trainer"},
    ),
    (
        "bedrock-region",
        {
            "x-portkey-provider": "bedrock",
            "x-portkey-aws-access-key-id": "AKIAEXAMPLE0000000",
            "x-portkey-aws-secret-access-key": "br-1",
            "x-portkey-aws-region": "us-east-1",
        },
        None,
        {"base_url": "https://bedrock.us-east-1.amazonaws.com", "region": "us-east-1"},
    ),
    (
        "configured-provider-without-adapter",
        {
            "x-portkey-provider": "fireworks-ai",
            "authorization": "Bearer fw",
            "x-portkey-fireworks-account-id": "acct",
        },
        None,
        {"provider": "fireworks-ai", "options": {"account_id": "acct"}},
    ),
]


@pytest.mark.parametrize(
    ("metadata", "body", "expected"), [r[1:] for r in ROUTES], ids=[r[0] for r in ROUTES]
)
def test_routes(
    router: Router, metadata: dict[str, str], body: dict[str, Any] | None, expected: dict[str, Any]
) -> None:
    account = resolve(router, metadata, body)
    for name, value in expected.items():
        got = getattr(account, name)
        assert (dict(got) if name == "options" else got) == value, name
    if not account.from_virtual_key and account.provider != "local":
        assert account.key.startswith(f"{account.provider}:key:") and len(account.key.split(":")[-1]) == 32


ERRORS: list[tuple[str, dict[str, str], dict[str, Any] | None, type[TunegateError], str, str | None]] = [
    (
        "unknown-provider",
        {"x-portkey-provider": "acme", "authorization": "Bearer k"},
        None,
        InvalidArgument,
        "unknown_provider",
        "x-portkey-provider",
    ),
    (
        "known-but-unconfigured",
        {"x-portkey-provider": "together-ai", "authorization": "Bearer k"},
        None,
        InvalidArgument,
        "unknown_provider",
        "x-portkey-provider",
    ),
    (
        "unknown-provider-in-config",
        {"x-portkey-config": '{"provider": "acme"}'},
        None,
        InvalidArgument,
        "unknown_provider",
        "x-portkey-config",
    ),
    (
        "unknown-virtual-key",
        {"x-portkey-virtual-key": "nope"},
        None,
        InvalidArgument,
        "unknown_virtual_key",
        "x-portkey-virtual-key",
    ),
    (
        "virtual-key-env-unset",
        {"x-portkey-virtual-key": "unset"},
        None,
        FailedPrecondition,
        "virtual_key_misconfigured",
        None,
    ),
    (
        "missing-credentials",
        {"x-portkey-provider": "openai"},
        None,
        InvalidArgument,
        "missing_credentials",
        "authorization",
    ),
    (
        "basic-auth-is-no-credential",
        {"x-portkey-provider": "openai", "authorization": "Basic dTpw"},
        None,
        InvalidArgument,
        "missing_credentials",
        "authorization",
    ),
    (
        "gateway-key-is-no-credential",
        {"x-portkey-provider": "openai", "x-portkey-api-key": "pk-1"},
        None,
        InvalidArgument,
        "missing_credentials",
        "authorization",
    ),
    (
        "azure-without-resource",
        {"x-portkey-provider": "azure-openai", "api-key": "az"},
        None,
        InvalidArgument,
        "missing_provider_option",
        "x-portkey-azure-resource-name",
    ),
    (
        "azure-resource-moves-host",
        {**AZURE, "x-portkey-azure-resource-name": "evil.example/#"},
        None,
        InvalidArgument,
        "invalid_provider_option",
        "x-portkey-azure-resource-name",
    ),
    (
        "bedrock-without-region",
        {
            "x-portkey-provider": "bedrock",
            "x-portkey-aws-access-key-id": "AKIAEXAMPLE0000000",
            "x-portkey-aws-secret-access-key": "b",
        },
        None,
        InvalidArgument,
        "missing_provider_option",
        "x-portkey-aws-region",
    ),
    (
        "custom-host-refused",
        {**OPENAI, "x-portkey-custom-host": "http://169.254.169.254/latest"},
        None,
        InvalidArgument,
        "custom_host_not_allowed",
        "x-portkey-custom-host",
    ),
    (
        "custom-host-wrong-port",
        {**OPENAI, "x-portkey-custom-host": "https://proxy.internal:9443/v1"},
        None,
        InvalidArgument,
        "custom_host_not_allowed",
        "x-portkey-custom-host",
    ),
    (
        "custom-host-default-port-mismatch",
        {**OPENAI, "x-portkey-custom-host": "https://proxy.internal/v1"},
        None,
        InvalidArgument,
        "custom_host_not_allowed",
        "x-portkey-custom-host",
    ),
    (
        "custom-host-suffix",
        {**OPENAI, "x-portkey-custom-host": "https://proxy.internal.evil.com:8443"},
        None,
        InvalidArgument,
        "custom_host_not_allowed",
        "x-portkey-custom-host",
    ),
    (
        "custom-host-subdomain",
        {**OPENAI, "x-portkey-custom-host": "https://a.mirror.example.com"},
        None,
        InvalidArgument,
        "custom_host_not_allowed",
        "x-portkey-custom-host",
    ),
    (
        "custom-host-userinfo-trick",
        {**OPENAI, "x-portkey-custom-host": "http://proxy.internal:8443@evil.com/"},
        None,
        InvalidArgument,
        "invalid_custom_host",
        "x-portkey-custom-host",
    ),
    (
        "custom-host-file-scheme",
        {**OPENAI, "x-portkey-custom-host": "file:///etc/passwd"},
        None,
        InvalidArgument,
        "invalid_custom_host",
        "x-portkey-custom-host",
    ),
    (
        "custom-host-ftp-scheme",
        {**OPENAI, "x-portkey-custom-host": "ftp://proxy.internal:8443/"},
        None,
        InvalidArgument,
        "invalid_custom_host",
        "x-portkey-custom-host",
    ),
    (
        "custom-host-no-scheme",
        {**OPENAI, "x-portkey-custom-host": "proxy.internal:8443"},
        None,
        InvalidArgument,
        "invalid_custom_host",
        "x-portkey-custom-host",
    ),
    (
        "custom-host-in-config-refused",
        {**OPENAI, "x-portkey-config": '{"custom_host": "http://evil.com"}'},
        None,
        InvalidArgument,
        "custom_host_not_allowed",
        "x-portkey-config",
    ),
    (
        "custom-host-in-body-refused",
        OPENAI,
        {"custom_host": "http://evil.com"},
        InvalidArgument,
        "custom_host_not_allowed",
        "provider_options.custom_host",
    ),
    (
        "custom-host-without-provider",
        {"authorization": "Bearer k", "x-portkey-custom-host": "https://proxy.internal:8443"},
        None,
        InvalidArgument,
        "missing_provider",
        "x-portkey-provider",
    ),
    (
        "vk-vs-provider-header",
        {"x-portkey-virtual-key": "team-azure", "x-portkey-provider": "openai"},
        None,
        InvalidArgument,
        "conflicting_route",
        "x-portkey-provider",
    ),
    (
        "vk-vs-config-provider",
        {"x-portkey-virtual-key": "team-azure", "x-portkey-config": '{"provider": "openai"}'},
        None,
        InvalidArgument,
        "conflicting_route",
        "x-portkey-provider",
    ),
    (
        "vk-vs-api-key",
        {"x-portkey-config": '{"virtual_key": "team-azure", "api_key": "k"}'},
        None,
        InvalidArgument,
        "conflicting_route",
        "x-portkey-virtual-key",
    ),
    (
        "vk-vs-resource",
        {"x-portkey-virtual-key": "team-azure", "x-portkey-azure-resource-name": "other"},
        None,
        InvalidArgument,
        "conflicting_route",
        "x-portkey-azure-resource-name",
    ),
    (
        "vk-vs-api-version",
        {"x-portkey-virtual-key": "team-azure", "x-portkey-azure-api-version": "v1"},
        None,
        InvalidArgument,
        "conflicting_route",
        "x-portkey-azure-api-version",
    ),
    (
        "vk-vs-custom-host",
        {"x-portkey-virtual-key": "team-azure", "x-portkey-custom-host": "https://proxy.internal:8443"},
        None,
        InvalidArgument,
        "conflicting_route",
        "x-portkey-custom-host",
    ),
    (
        "config-vs-header-provider",
        {**OPENAI, "x-portkey-config": '{"provider": "azure-openai"}'},
        None,
        InvalidArgument,
        "conflicting_route",
        "x-portkey-provider",
    ),
    (
        "body-vs-header-provider",
        OPENAI,
        {"provider": "azure"},
        InvalidArgument,
        "conflicting_route",
        "x-portkey-provider",
    ),
    (
        "two-virtual-keys",
        {"x-portkey-virtual-key": "team-azure"},
        {"virtual_key": "team-openai"},
        InvalidArgument,
        "conflicting_route",
        "x-portkey-virtual-key",
    ),
    (
        "azure-option-for-openai",
        {**OPENAI, "x-portkey-azure-resource-name": "res1"},
        None,
        InvalidArgument,
        "conflicting_route",
        "x-portkey-azure-resource-name",
    ),
    (
        "config-not-json",
        {**OPENAI, "x-portkey-config": '{"provider": '},
        None,
        InvalidArgument,
        "invalid_portkey_config",
        "x-portkey-config",
    ),
    (
        "config-not-object",
        {**OPENAI, "x-portkey-config": '["openai"]'},
        None,
        InvalidArgument,
        "invalid_portkey_config",
        "x-portkey-config",
    ),
    (
        "config-saved-id",
        {**OPENAI, "x-portkey-config": "pc-abc-123"},
        None,
        InvalidArgument,
        "saved_config_not_supported",
        "x-portkey-config",
    ),
    (
        "config-targets",
        {**OPENAI, "x-portkey-config": '{"strategy": {"mode": "fallback"}, "targets": []}'},
        None,
        InvalidArgument,
        "unsupported_portkey_config",
        "x-portkey-config",
    ),
    (
        "config-non-string",
        {"x-portkey-config": '{"provider": 7}'},
        None,
        InvalidArgument,
        "invalid_request",
        "x-portkey-config",
    ),
    (
        "body-non-string",
        {"authorization": "Bearer k"},
        {"provider": ["openai"]},
        InvalidArgument,
        "invalid_request",
        "provider_options.provider",
    ),
]


@pytest.mark.parametrize(
    ("metadata", "body", "error", "code", "param"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS]
)
def test_errors(
    router: Router,
    metadata: dict[str, str],
    body: dict[str, Any] | None,
    error: type[TunegateError],
    code: str,
    param: str | None,
) -> None:
    for _ in range(2):  # errors are never remembered
        with pytest.raises(error) as caught:
            router.resolve(metadata, body)
        assert type(caught.value) is error
        assert (caught.value.code, caught.value.param) == (code, param)
        for secret in ("sk-1", "az-1", AZURE_KEY, TEAM_KEY):
            assert secret not in caught.value.message


def _with_credential(metadata: dict[str, str], secret: str) -> dict[str, str]:
    changed = dict(metadata)
    for header in ("authorization", "api-key"):
        if header in changed:
            changed[header] = changed[header].replace("Bearer ", "Bearer " + secret + "-", 1)
            if header == "api-key" or not changed[header].startswith("Bearer "):
                changed[header] = secret + "-" + changed[header]
    return changed


HINTS = (None, "openai", "azure-openai", "local")


@pytest.mark.parametrize(
    "metadata", [r[1] for r in ROUTES if r[2] is None], ids=[r[0] for r in ROUTES if r[2] is None]
)
def test_a_remembered_route_answers_as_a_fresh_router_and_keeps_no_credential(
    metadata: dict[str, str],
) -> None:
    shared = Router(CONFIG, env=ENV)
    calls = [
        (_with_credential(metadata, secret), hint)
        for secret in ("first", "second", "first")
        for hint in HINTS
    ]
    calls.append(({**metadata, "authorization": "Bearer " + JWT}, None))  # another shape: a token
    for call, hint in calls:
        fresh = Router(CONFIG, env=ENV).resolve(call, provider_hint=hint)
        assert shared.resolve(call, provider_hint=hint) == fresh
    for shape in shared._shapes.values():
        assert shape is None or not any(
            secret in repr(getattr(shape, name)) for name in shape.__slots__ for secret in ("first", "second")
        )


def test_virtual_keys_are_resolved_on_every_call() -> None:
    env = dict(ENV)
    router = Router(CONFIG, env=env)
    assert resolve(router, {"x-portkey-virtual-key": "team-openai"}).credential == TEAM_KEY
    env["TEAM_OPENAI_KEY"] = "sk-rotated"
    assert resolve(router, {"x-portkey-virtual-key": "team-openai"}).credential == "sk-rotated"


def test_misconfigured_virtual_key_names_the_variable(router: Router) -> None:
    with pytest.raises(FailedPrecondition, match="NOT_SET_ANYWHERE"):
        router.resolve({"x-portkey-virtual-key": "unset"})


def test_conflicting_api_keys_are_not_echoed(router: Router) -> None:
    with pytest.raises(InvalidArgument) as caught:
        router.resolve({"x-portkey-config": '{"provider": "openai", "api_key": "sk-a"}'}, {"api_key": "sk-b"})
    assert caught.value.code == "conflicting_route"
    assert "sk-a" not in caught.value.message and "sk-b" not in caught.value.message


@pytest.mark.parametrize(
    "metadata",
    [
        {},
        {"authorization": "Bearer sk-1"},  # the plain OpenAI SDK: the caller picks a default
        {"openai-organization": "org_1", "authorization": "Bearer sk-1"},
        {"x-portkey-api-key": "pk-tenant", "x-portkey-trace-id": "t"},
        {"x-portkey-provider": "", "x-portkey-config": ""},
    ],
)
def test_no_provider_named_is_none(router: Router, metadata: dict[str, str]) -> None:
    assert router.resolve(metadata) is None


def test_provider_hint_rebuilds_the_account_of_a_plain_sdk_call(router: Router) -> None:
    created = resolve(router, OPENAI)
    followed = resolve(router, {"authorization": "Bearer sk-1"}, hint="openai")
    assert followed == created
    other = resolve(router, {"authorization": "Bearer sk-2"}, hint="openai")
    assert other.key != created.key
    # Azure's SDK sends `api-key`; the hint makes it the preferred header, as for a named provider.
    azure = resolve(
        router,
        {"api-key": "az-1", "authorization": "Bearer x", "x-portkey-azure-resource-name": "res1"},
        hint="azure-openai",
    )
    assert azure == resolve(router, AZURE)


def test_provider_hint_is_only_a_fallback(router: Router) -> None:
    assert router.resolve({}, provider_hint="openai") is None  # no credential: use the stored account
    assert router.resolve({"authorization": "Bearer k"}, provider_hint="gone-provider") is None
    assert resolve(router, OPENAI, hint="azure-openai").provider == "openai"
    assert (
        resolve(router, {"x-portkey-virtual-key": "team-openai"}, hint="azure-openai").key == "vk:team-openai"
    )


def test_account_keys_are_stable_and_identify_the_backend(router: Router) -> None:
    base = resolve(router, AZURE)
    assert resolve(router, dict(AZURE)).key == base.key
    assert resolve(router, PORTKEY_SDK).key == resolve(router, OPENAI).key
    same_backend = [
        {**AZURE, "x-portkey-azure-deployment-id": "dep"},  # deployments do not select a backend
        {**AZURE, "x-portkey-azure-api-version": "v1"},  # the default, spelled out
        {**AZURE, "api-key": "", "authorization": "Bearer az-1"},  # same key, other header
    ]
    for metadata in same_backend:
        assert resolve(router, metadata).key == base.key, metadata
    other_backend = [
        {**AZURE, "api-key": "az-2"},
        {**AZURE, "x-portkey-azure-resource-name": "res2"},
        {**AZURE, "x-portkey-azure-api-version": "2024-10-21"},
        {**AZURE, "x-portkey-custom-host": "https://proxy.internal:8443/openai"},
    ]
    keys = {resolve(router, metadata).key for metadata in other_backend}
    assert len(keys) == len(other_backend) and base.key not in keys
    assert resolve(router, {**OPENAI, "openai-project": "p"}).key != resolve(router, OPENAI).key


def test_secrets_stay_out_of_keys_and_reprs(router: Router) -> None:
    for metadata in (
        OPENAI,
        AZURE,
        {"x-portkey-virtual-key": "team-azure"},
        {"x-portkey-virtual-key": "team-openai"},
    ):
        account = resolve(router, metadata)
        assert account.credential
        assert account.credential not in repr(account) and account.credential not in account.key
        assert account.credential not in str(account)


def test_account_for_rebuilds_virtual_key_and_local_accounts(router: Router) -> None:
    by_header = resolve(router, {"x-portkey-virtual-key": "team-azure"})
    assert router.account_for("vk:team-azure") == by_header
    assert router.account_for("local") == resolve(router, {"x-portkey-provider": "local"})
    assert router.account_for("vk:trainer") == resolve(router, {"x-portkey-virtual-key": "trainer"})
    assert router.account_for("vk:removed") is None
    assert router.account_for(resolve(router, OPENAI).key) is None
    with pytest.raises(FailedPrecondition):
        router.account_for("vk:unset")


def test_virtual_key_secret_is_read_at_call_time() -> None:
    env: dict[str, str] = {}
    router = Router(CONFIG, env=env)
    with pytest.raises(FailedPrecondition):
        router.account_for("vk:team-openai")
    env["TEAM_OPENAI_KEY"] = "sk-rotated"
    account = router.account_for("vk:team-openai")
    assert account is not None and account.credential == "sk-rotated"


def test_templated_base_url_for_tests() -> None:
    providers = {"azure-openai": ProviderSettings(base_url="http://127.0.0.1:8123/{resource_name}/openai")}
    router = Router(RoutingConfig(providers=providers), env={})
    account = resolve(router, AZURE)
    assert account.base_url == "http://127.0.0.1:8123/res1/openai"
    assert account.options["api_version"] == "v1"  # Azure's default even without a configured one
    dated = ProviderSettings(
        base_url="https://{resource_name}.openai.azure.com/openai", api_version="2024-10-21"
    )
    account = resolve(Router(RoutingConfig(providers={"azure-openai": dated}), env={}), AZURE)
    assert account.options["api_version"] == "2024-10-21"


def test_nothing_is_allowed_by_default() -> None:
    router = Router(RoutingConfig(), env={})
    with pytest.raises(InvalidArgument) as caught:
        router.resolve({**OPENAI, "x-portkey-custom-host": "http://127.0.0.1:8000/v1"})
    assert caught.value.code == "custom_host_not_allowed"
    assert RoutingConfig().provider_names == {
        "openai",
        "azure-openai",
        "bedrock",
        "vertex-ai",
        "fireworks-ai",
        "local",
    }


def test_metadata_dict() -> None:
    pairs: list[tuple[str, str | bytes]] = [
        ("X-Portkey-Provider", "openai"),
        ("x-portkey-provider", "azure-openai"),
        ("x-trace-bin", b"\x00"),
        ("authorization", "Bearer k"),
    ]
    assert metadata_dict(pairs) == {"x-portkey-provider": "openai", "authorization": "Bearer k"}
    assert metadata_dict(None) == {}


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: RoutingConfig(allowed_custom_hosts=("*.example.com",)), "allowed_custom_hosts"),
        (lambda: RoutingConfig(allowed_custom_hosts=("https://example.com",)), "allowed_custom_hosts"),
        (lambda: RoutingConfig(allowed_custom_hosts=("example.com:99999",)), "port"),
        (lambda: ProviderSettings(base_url="https://{tenant}.example.com"), "placeholder"),
        (lambda: ProviderSettings(base_url="file:///tmp"), "http"),
        (lambda: ProviderSettings(base_url="https://x", timeout_seconds=0), "timeout"),
        (lambda: VirtualKey(name="k", provider="openai", api_key_env=None), "api_key_env"),
        (
            lambda: VirtualKey(name="k", provider="openai", api_key_env="A", options={"resource_name": "r"}),
            "unknown option",
        ),
        (
            lambda: VirtualKey(name="k", provider="azure", api_key_env="A", options={"resource_name": "a.b"}),
            "invalid value",
        ),
        (lambda: VirtualKey(name="k", provider="openai", api_key_env="not a var"), "environment variable"),
        (lambda: VirtualKey(name="bad name", provider="openai", api_key_env="A"), "name"),
        (
            lambda: RoutingConfig(
                virtual_keys={"k": VirtualKey(name="k", provider="anthropic", api_key_env="A")}
            ),
            "unknown provider",
        ),
        (
            lambda: RoutingConfig(
                virtual_keys={"x": VirtualKey(name="k", provider="openai", api_key_env="A")}
            ),
            "named",
        ),
        (lambda: RoutingConfig(providers={"Azure": ProviderSettings(base_url="https://x")}), "provider name"),
    ],
)
def test_config_is_validated_when_built(build: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_fireworks_alias_and_account_id_pattern() -> None:
    router = Router(CONFIG, env={})
    account = router.resolve(
        {
            "x-portkey-provider": "fireworks",
            "authorization": "Bearer fw",
            "x-portkey-fireworks-account-id": "my-team-1",
        }
    )
    assert account is not None and account.provider == "fireworks-ai"
    assert account.options["account_id"] == "my-team-1"
    for bad in ("My_Team", "team/../x", "team#x", "-team"):
        with pytest.raises(InvalidArgument) as caught:
            router.resolve(
                {
                    "x-portkey-provider": "fireworks-ai",
                    "authorization": "Bearer fw",
                    "x-portkey-fireworks-account-id": bad,
                }
            )
        assert caught.value.param == "x-portkey-fireworks-account-id"
