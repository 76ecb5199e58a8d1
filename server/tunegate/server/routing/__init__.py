"""Provider routing: which provider account, and which credentials, serve a call.

Theory of operation. A call names its route the way Portkey's gateway expects, through gRPC
metadata (the edge forwards `authorization`, `api-key`, `openai-*` and every `x-portkey-*`
header, lower-cased) and, for a create, the body's `portkey_options` / `provider_options`:

- `x-portkey-provider` + `authorization: Bearer <key>` (or `api-key`, or a bare
  `authorization: <key>`): credentials for this call only, never stored or logged; the
  account key is `<provider>:key:<sha256(credential, base_url, backend options)[:32]>`;
- `x-portkey-virtual-key: <name>`: credentials named in the configuration (the secret is read
  from the environment variable the key names); the account key is `vk:<name>`, from which
  `Router.account_for` rebuilds the account for follow-ups and the start-up reconciler;
- `x-portkey-config: <JSON>` and body options carry the same fields under Portkey's key
  spellings (`provider`, `api_key`, `virtual_key`, `custom_host`, `azure_resource_name`, …);
- `x-portkey-custom-host` replaces the provider's base URL, only for allow-listed hosts;
- provider headers: `x-portkey-azure-{resource-name,deployment-id,api-version}`,
  `openai-{organization,project}`, `x-portkey-{aws,vertex}-region`, … become `Account.options`;
- Bedrock is signed with AWS credentials instead of a bearer key: `x-portkey-aws-access-key-id`
  and `-secret-access-key` (+ `-session-token`), optionally `-auth-type: assumedRole` with
  `-role-arn` and `-external-id`; the per-call settings `-s3-bucket`, `-s3-object-key`,
  `-bedrock-model` and `x-portkey-amz-server-side-encryption[-aws-kms-key-id]` are options that
  do not change the account key (`BEDROCK_CALL_OPTIONS`).

Every source is merged field by field; two sources disagreeing is a 400 (`conflicting_route`),
never silently resolved. `x-portkey-api-key` is the *gateway* key (see `tunegate.server.owner`), not a
provider credential. Config must be imported before the router: provider adapters import
`ProviderSettings` from here, and the router imports `tunegate.server.providers`.
"""

from __future__ import annotations

from tunegate.server.routing._config import (
    AZURE_DEFAULT_API_VERSION,
    BEDROCK,
    BEDROCK_CALL_OPTIONS,
    BEDROCK_SETTINGS,
    DEFAULT_PROVIDERS,
    FIREWORKS,
    LOCAL_PROVIDER,
    PROVIDER_OPTIONS,
    ProviderSettings,
    RoutingConfig,
    VirtualKey,
    canonical_provider,
    decode_aws_secret,
    encode_aws_secret,
    parse_allowed_host,
)
from tunegate.server.routing._router import (
    STORED_KEY_PREFIX,
    Router,
    StoredKeys,
    metadata_dict,
    non_route_options,
    normalise_key,
)

__all__ = [
    "AZURE_DEFAULT_API_VERSION",
    "BEDROCK",
    "BEDROCK_CALL_OPTIONS",
    "BEDROCK_SETTINGS",
    "DEFAULT_PROVIDERS",
    "FIREWORKS",
    "LOCAL_PROVIDER",
    "PROVIDER_OPTIONS",
    "STORED_KEY_PREFIX",
    "ProviderSettings",
    "Router",
    "RoutingConfig",
    "StoredKeys",
    "VirtualKey",
    "canonical_provider",
    "decode_aws_secret",
    "encode_aws_secret",
    "metadata_dict",
    "non_route_options",
    "normalise_key",
    "parse_allowed_host",
]
