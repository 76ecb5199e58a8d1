"""The SSRF rules for webhook targets: https to public hosts, unless the operator allow-lists a
host (then private and plain http are fine)."""

from __future__ import annotations

import pytest
from tunegate.server.errors import InvalidArgument
from tunegate.server.webhooks import HostPolicy, WebhookSettings, is_public_address


@pytest.mark.parametrize(
    "url",
    [
        "https://10.0.0.1/x",
        "https://127.0.0.1/hook",
        "https://[::1]/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://192.168.1.20:8443/hook",
        "https://172.16.0.5/hook",
        "https://[fd00::1]/hook",
        "https://[::ffff:10.0.0.1]/hook",
        "https://0.0.0.0/hook",
        "https://224.0.0.1/hook",
        "https://100.64.0.1/hook",
    ],
)
def test_non_public_literal_addresses_are_refused(url: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        HostPolicy().check_url(url)
    assert caught.value.param == "url" and caught.value.code == "webhook_host_not_allowed"


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/hook",
        "ftp://example.com/x",
        "https:///nohost",
        "https://u:p@example.com/",
        "https://example.com/#frag",
        "",
        "x",
    ],
)
def test_malformed_or_plain_http_urls_are_refused(url: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        HostPolicy().check_url(url)
    assert caught.value.param == "url"


def test_public_https_urls_pass_and_names_are_checked_when_resolved() -> None:
    policy = HostPolicy()
    target = policy.check_url("https://Hooks.Example.com/tunegate?x=1")
    assert (target.host, target.port, target.allowed) == ("hooks.example.com", 443, False)
    assert policy.check_url("https://93.184.216.34:8443/x").port == 8443
    assert policy.check_addresses(target, ["93.184.216.34"]) is None
    refused = policy.check_addresses(target, ["93.184.216.34", "10.1.2.3"])
    assert refused is not None and "10.1.2.3" in refused
    assert policy.check_addresses(target, []) is not None


def test_allow_listed_hosts_may_be_private_and_http() -> None:
    policy = HostPolicy(["127.0.0.1", "hooks.internal:8080"])
    loopback = policy.check_url("http://127.0.0.1:40123/hook")
    assert loopback.allowed and policy.check_addresses(loopback, ["127.0.0.1"]) is None
    internal = policy.check_url("http://hooks.internal:8080/x")
    assert internal.allowed and policy.check_addresses(internal, ["10.0.0.7"]) is None
    with pytest.raises(InvalidArgument):  # the entry names its port; another port is not listed
        policy.check_url("http://hooks.internal:9090/x")
    with pytest.raises(InvalidArgument):
        policy.check_url("http://10.0.0.1/x")


def test_is_public_address() -> None:
    assert is_public_address("8.8.8.8") and is_public_address("2001:4860:4860::8888")
    assert not is_public_address("127.0.0.1") and not is_public_address("fe80::1%eth0")


def test_settings_validate_their_allow_list_and_numbers() -> None:
    assert WebhookSettings(allowed_hosts=("a.example:8443",)).allowed_hosts == ("a.example:8443",)
    with pytest.raises(ValueError, match=r"webhooks\.allowed_hosts"):
        WebhookSettings(allowed_hosts=("*.example.com",))
    with pytest.raises(ValueError, match="max_attempts"):
        WebhookSettings(max_attempts=0)
    with pytest.raises(ValueError, match="backoff_seconds"):
        WebhookSettings(backoff_seconds=0)
