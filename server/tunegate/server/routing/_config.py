"""Routing configuration: which providers exist, where they live, which named credentials
(virtual keys) the gateway holds, and which custom hosts a caller may point it at.

Everything here is a frozen dataclass validated when built (`ValueError` on a bad value), so a
`Router` never meets a malformed setting at request time. Secrets never live here: a virtual key
names the *environment variable* that holds its credential.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from urllib.parse import urlsplit

__all__ = [
    "AZURE_DEFAULT_API_VERSION",
    "BEDROCK",
    "BEDROCK_CALL_OPTIONS",
    "BEDROCK_SETTINGS",
    "CALL_OPTIONS",
    "DEFAULT_PROVIDERS",
    "FIREWORKS",
    "LOCAL_PROVIDER",
    "PROVIDER_OPTIONS",
    "VERTEX",
    "VERTEX_DEFAULT_BASE_URL",
    "VERTEX_GLOBAL_BASE_URL",
    "ProviderSettings",
    "RoutingConfig",
    "VirtualKey",
    "canonical_provider",
    "check_option",
    "decode_aws_secret",
    "encode_aws_secret",
    "parse_allowed_host",
]

LOCAL_PROVIDER = "local"
"""The on-machine trainer: always routable, needs no credential."""

BEDROCK = "bedrock"
"""AWS Bedrock: signed with AWS credentials (`x-portkey-aws-*`), not a bearer key."""

VERTEX = "vertex-ai"
"""Google Vertex AI: a service-account key file (`x-portkey-vertex-service-account-json`, from
which the gateway mints access tokens) or an access token as `Authorization: Bearer`."""

FIREWORKS = "fireworks-ai"
"""Fireworks AI: an API key as `Authorization: Bearer` and an account id
(`x-portkey-fireworks-account-id`) that every path is under."""

AZURE_DEFAULT_API_VERSION = "v1"
"""Azure's GA `/openai/v1` surface: OpenAI's shapes (``"auto"`` hyperparameters, `method`,
`metadata`, pause/resume) and no version churn. A caller pins a dated version (e.g.
`2024-10-21`) with `x-portkey-azure-api-version`, a virtual key's `api_version`, or
`[providers.azure-openai] api_version`."""

_PROVIDER_ALIASES = {"azure": "azure-openai", "google-vertex-ai": VERTEX, "fireworks": FIREWORKS}

_PROVIDER_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# These end up inside a host name (`{resource_name}.openai.azure.com`, `bedrock.{region}…`),
# so they are held to DNS-label characters: a value like `evil.example/#` would move the host.
_DNS_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_PLACEHOLDER = re.compile(r"\{([a-z_]*)\}")
_PLACEHOLDERS = frozenset({"resource_name", "region"})

_OPTION_PATTERNS: Mapping[str, re.Pattern[str]] = {
    "resource_name": _DNS_LABEL,
    "deployment_id": _TOKEN,
    "api_version": _TOKEN,
    "auth": re.compile(r"api_key|bearer|service_account"),
    "organization": _TOKEN,
    "project": _TOKEN,
    "project_id": _TOKEN,
    # Fireworks account ids: lower-case letters, digits and hyphens (they sit in URL paths).
    "account_id": re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?"),
    # Bedrock. Names that end up in a URL (bucket, key, region) are checked again, with AWS's
    # full rules and a precise message, by `tunegate.server.providers.bedrock._s3`.
    "aws_access_key_id": re.compile(r"[A-Z0-9]{16,128}"),
    "auth_type": re.compile(r"assumedRole|accessKey"),
    "aws_role_arn": re.compile(r"arn:aws(?:-[a-z]+)*:iam::[0-9]{12}:role/[\w+=,.@/-]{1,512}"),
    "job_role_arn": re.compile(r"arn:aws(?:-[a-z]+)*:iam::[0-9]{12}:role/[\w+=,.@/-]{1,512}"),
    "external_id": re.compile(r"[\w+=,.@:/-]{2,1224}"),
    "s3_bucket": re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"),
    "s3_object_key": re.compile(r"[-!_*'().a-zA-Z0-9/]{1,1024}"),
    "bedrock_model": re.compile(r"[-a-zA-Z0-9.:/_]{1,2048}"),
    "server_side_encryption": re.compile(r"aws:kms|AES256"),
    "kms_key_id": re.compile(r"[-a-zA-Z0-9:/_]{1,2048}"),
    # Vertex: a GCS bucket (3-63 characters; dotted names up to 222).
    "storage_bucket": re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]"),
}

PROVIDER_OPTIONS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "openai": frozenset({"organization", "project"}),
        "azure-openai": frozenset({"resource_name", "deployment_id", "api_version", "auth"}),
        VERTEX: frozenset({"project_id", "auth"}),
        FIREWORKS: frozenset({"account_id"}),
        BEDROCK: frozenset({"aws_access_key_id", "auth_type", "aws_role_arn", "external_id", "job_role_arn"}),
    }
)
"""The `Account.options` each provider understands. Azure's `auth` is `api_key` (send the
credential as `api-key`) or `bearer` (send it as `Authorization: Bearer`, an Entra ID token).
Bedrock's `auth_type: assumedRole` makes the gateway assume `aws_role_arn` (with `external_id`)
through STS before its calls; `job_role_arn` is the role Bedrock runs jobs as."""

BEDROCK_SETTINGS: Mapping[str, tuple[int, int]] = MappingProxyType(
    {"upload_part_size_mib": (5, 5120), "upload_concurrency": (1, 16)}
)
"""Adapter settings in `[providers.bedrock] options`, with their ranges."""

ADAPTER_SETTINGS: Mapping[str, Mapping[str, tuple[int, int]]] = MappingProxyType(
    {
        BEDROCK: BEDROCK_SETTINGS,
        FIREWORKS: MappingProxyType({"upload_multipart_limit_bytes": (0, 150_000_000)}),
    }
)
"""Adapter settings in `[providers.<name>] options`, with their ranges. Fireworks: files up to
`upload_multipart_limit_bytes` go to a dataset in one multipart request, larger ones through a
signed URL (Fireworks takes at most 150 MB in one request; 0: always a signed URL)."""

BEDROCK_CALL_OPTIONS: frozenset[str] = frozenset(
    {"s3_bucket", "s3_object_key", "bedrock_model", "server_side_encryption", "kms_key_id"}
)
"""Bedrock options that are settings of a call rather than of the account: where training data
goes, which model to submit, how objects are encrypted. They do not change the account's key,
and a request may add them to a virtual key that leaves them unset."""

CALL_OPTIONS: Mapping[str, frozenset[str]] = MappingProxyType(
    {BEDROCK: BEDROCK_CALL_OPTIONS, VERTEX: frozenset({"storage_bucket"})}
)
"""Each provider's per-call options (see `BEDROCK_CALL_OPTIONS`); Vertex: the GCS bucket for
training data."""


def encode_aws_secret(secret_access_key: str, session_token: str | None) -> str:
    """A Bedrock `Account.credential`: the secret access key, and the session token of temporary
    credentials after a newline (neither can contain one: both arrive as header values)."""
    return secret_access_key if not session_token else f"{secret_access_key}\n{session_token}"


def decode_aws_secret(credential: str) -> tuple[str, str | None]:
    """`(secret_access_key, session_token or None)` from `encode_aws_secret`'s string."""
    secret, _, token = credential.partition("\n")
    return secret, token or None


def canonical_provider(name: str) -> str:
    """A provider name as routing knows it: lower case, Portkey's `azure` alias resolved."""
    lowered = name.strip().lower()
    return _PROVIDER_ALIASES.get(lowered, lowered)


def check_option(name: str, value: str) -> bool:
    """Whether `value` is acceptable for the provider option or `region` called `name`."""
    pattern = _DNS_LABEL if name == "region" else _OPTION_PATTERNS.get(name)
    return pattern is not None and pattern.fullmatch(value) is not None


def _check_url(url: str, what: str, *, template: bool = False) -> None:
    probe = url
    if template:
        for placeholder in _PLACEHOLDER.findall(url):
            if placeholder not in _PLACEHOLDERS:
                raise ValueError(f"{what}: unknown placeholder {{{placeholder}}} in {url!r}")
        probe = _PLACEHOLDER.sub("x", url)
    if "{" in probe or "}" in probe:
        raise ValueError(f"{what}: unexpected brace in {url!r}")
    parts = urlsplit(probe)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} must be an http:// or https:// URL, got {url!r}")
    if parts.username is not None or parts.query or parts.fragment:
        raise ValueError(f"{what} must not carry credentials, a query or a fragment: {url!r}")


def parse_allowed_host(entry: str) -> tuple[str, int | None]:
    """An `allowed_custom_hosts` entry, `host` or `host:port` (IPv6 as `[::1]:8080`), as
    `(lower-cased host, port or None)`. Raises `ValueError` for anything else — including
    wildcards, which are deliberately not supported: every allowed host is named exactly."""
    text = entry.strip()
    if not text or "*" in text or "/" in text or "@" in text or "?" in text or "#" in text:
        raise ValueError(f"allowed_custom_hosts: expected host or host:port, got {entry!r}")
    parts = urlsplit("//" + text)
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"allowed_custom_hosts: bad port in {entry!r}") from None
    if not parts.hostname:
        raise ValueError(f"allowed_custom_hosts: expected host or host:port, got {entry!r}")
    return parts.hostname.lower(), port


@dataclass(frozen=True, slots=True)
class ProviderSettings:
    """How to reach one provider.

    `base_url` may contain `{resource_name}` (Azure: one host per resource) and `{region}`
    (Bedrock, Vertex), filled in per account. `api_version` is the provider's default API
    version when it has one (Azure; see `AZURE_DEFAULT_API_VERSION`).
    """

    base_url: str
    timeout_seconds: float = 60.0
    max_retries: int = 2
    api_version: str | None = None
    options: Mapping[str, str] = field(default_factory=dict)
    """Provider-specific defaults, checked by `RoutingConfig`. Bedrock: the per-call options
    (`BEDROCK_CALL_OPTIONS`) and `job_role_arn` used when a call gives none, and the upload's
    `upload_part_size_mib` (≥ 5) and `upload_concurrency` (1–16)."""

    def __post_init__(self) -> None:
        _check_url(self.base_url, "base_url", template=True)
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))
        if not self.timeout_seconds > 0:
            raise ValueError("timeout_seconds must be positive")
        if self.max_retries < 0:
            raise ValueError("max_retries must not be negative")
        if self.api_version is not None and not check_option("api_version", self.api_version):
            raise ValueError(f"api_version: invalid value {self.api_version!r}")
        object.__setattr__(self, "options", MappingProxyType({k: str(v) for k, v in self.options.items()}))

    def check_options(self, provider: str) -> None:
        """Raises `ValueError` for an option `provider` does not take or a malformed value."""
        if provider == VERTEX:
            for key, value in self.options.items():
                if key not in CALL_OPTIONS[VERTEX] or not check_option(key, value):
                    raise ValueError(f"providers.{provider}.options: invalid option {key!r} = {value!r}")
            return
        settings = ADAPTER_SETTINGS.get(provider, {})
        if not settings:
            if self.options:
                raise ValueError(f"providers.{provider}: the {provider} provider takes no options")
            return
        for key, value in self.options.items():
            if key in settings:
                low, high = settings[key]
                if not value.isdigit() or not low <= int(value) <= high:
                    raise ValueError(
                        f"providers.{provider}.options.{key} must be {low}-{high}, got {value!r}"
                    )
            elif provider == BEDROCK and (key in BEDROCK_CALL_OPTIONS or key == "job_role_arn"):
                if not check_option(key, value):
                    raise ValueError(f"providers.{provider}.options.{key}: invalid value {value!r}")
            else:
                raise ValueError(f"providers.{provider}.options: unknown option {key!r}")


VERTEX_DEFAULT_BASE_URL = "https://{region}-aiplatform.googleapis.com"
VERTEX_GLOBAL_BASE_URL = "https://aiplatform.googleapis.com"
"""Vertex's host for the `global` location (every other location has its regional host)."""

DEFAULT_PROVIDERS: Mapping[str, ProviderSettings] = MappingProxyType(
    {
        "openai": ProviderSettings(base_url="https://api.openai.com/v1"),
        "azure-openai": ProviderSettings(
            base_url="https://{resource_name}.openai.azure.com/openai", api_version=AZURE_DEFAULT_API_VERSION
        ),
        BEDROCK: ProviderSettings(base_url="https://bedrock.{region}.amazonaws.com"),
        VERTEX: ProviderSettings(base_url=VERTEX_DEFAULT_BASE_URL),
        FIREWORKS: ProviderSettings(base_url="https://api.fireworks.ai"),
    }
)
"""Used when the configuration names no providers; a configured provider of the same name
replaces its default entirely (the CLI merges a partial `[providers.<name>]` table first)."""


@dataclass(frozen=True, slots=True)
class VirtualKey:
    """Named credentials held by the gateway (`x-portkey-virtual-key: <name>`).

    `api_key_env` names the environment variable holding the secret (None only for `local`, and
    for `bedrock`, where it means the gateway's own AWS credentials: botocore's default chain of
    environment, profile and instance role). A Bedrock key with `api_key_env` (the secret access
    key) names its `aws_access_key_id` in `options`.
    `base_url` replaces the provider's; `options` are provider options (`PROVIDER_OPTIONS`),
    e.g. Azure's `resource_name`, `api_version`, `deployment_id`, `auth`.
    A virtual key fixes its backend completely: a request naming it may repeat these settings
    but not change them, so the account can be rebuilt from the name alone (`vk:<name>`).
    """

    name: str
    provider: str
    api_key_env: str | None
    base_url: str | None = None
    region: str | None = None
    options: Mapping[str, str] = field(default_factory=dict)
    stored: bool = False
    """Held in the gateway's database with its secret sealed (no `api_key_env`)."""

    def __post_init__(self) -> None:
        if not _KEY_NAME.fullmatch(self.name):
            raise ValueError(f"virtual key name must match {_KEY_NAME.pattern}, got {self.name!r}")
        what = f"virtual key {self.name!r}"
        provider = canonical_provider(self.provider)
        if not _PROVIDER_NAME.fullmatch(provider):
            raise ValueError(f"{what}: invalid provider {self.provider!r}")
        object.__setattr__(self, "provider", provider)
        if self.api_key_env is None:
            if provider not in (LOCAL_PROVIDER, BEDROCK) and not self.stored:
                raise ValueError(f"{what}: api_key_env is required")
        elif not _ENV_NAME.fullmatch(self.api_key_env):
            raise ValueError(f"{what}: api_key_env must be an environment variable name")
        if self.base_url is not None:
            _check_url(self.base_url, f"{what}: base_url")
            object.__setattr__(self, "base_url", self.base_url.rstrip("/"))
        if self.region is not None and not check_option("region", self.region):
            raise ValueError(f"{what}: invalid region {self.region!r}")
        allowed = PROVIDER_OPTIONS.get(provider, frozenset()) | CALL_OPTIONS.get(provider, frozenset())
        if (
            provider == BEDROCK
            and (self.api_key_env is not None or self.stored)
            and "aws_access_key_id" not in self.options
        ):
            raise ValueError(f"{what}: a bedrock key with api_key_env needs options.aws_access_key_id")
        for key, value in self.options.items():
            if key not in allowed:
                known = ", ".join(sorted(allowed)) or "none"
                raise ValueError(f"{what}: unknown option {key!r} for {provider} (known: {known})")
            if not isinstance(value, str) or not check_option(key, value):
                raise ValueError(f"{what}: invalid value for {key}: {value!r}")
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    """The routing half of the server configuration.

    `allowed_custom_hosts` lists `host[:port]` entries a caller's `x-portkey-custom-host` may
    point at (a host without a port allows any port); empty — the default — refuses every
    custom host, since an open one would let callers make the gateway fetch any URL (SSRF).
    `providers` are the routable provider names (plus `local`, always) and their settings.
    """

    allowed_custom_hosts: tuple[str, ...] = ()
    virtual_keys: Mapping[str, VirtualKey] = field(default_factory=dict)
    providers: Mapping[str, ProviderSettings] = field(default_factory=lambda: DEFAULT_PROVIDERS)

    def __post_init__(self) -> None:
        hosts = tuple(self.allowed_custom_hosts)
        for entry in hosts:
            parse_allowed_host(entry)
        object.__setattr__(self, "allowed_custom_hosts", hosts)
        providers: dict[str, ProviderSettings] = {}
        for name, settings in self.providers.items():
            canonical = canonical_provider(name)
            if canonical != name or not _PROVIDER_NAME.fullmatch(name):
                raise ValueError(f"providers: invalid provider name {name!r}")
            if not isinstance(settings, ProviderSettings):
                raise ValueError(f"providers: {name!r} must be ProviderSettings")
            settings.check_options(name)
            providers[name] = settings
        object.__setattr__(self, "providers", MappingProxyType(providers))
        keys: dict[str, VirtualKey] = {}
        for name, key in self.virtual_keys.items():
            if not isinstance(key, VirtualKey) or key.name != name:
                raise ValueError(f"virtual_keys: entry {name!r} must be a VirtualKey named {name!r}")
            if key.provider not in self.provider_names:
                known = ", ".join(sorted(self.provider_names))
                raise ValueError(f"virtual key {name!r}: unknown provider {key.provider!r} (known: {known})")
            keys[name] = key
        object.__setattr__(self, "virtual_keys", MappingProxyType(keys))

    @property
    def provider_names(self) -> frozenset[str]:
        """Every routable provider name: the configured ones and `local`."""
        return frozenset(self.providers) | {LOCAL_PROVIDER}
