"""The gateway as a provider: gateway API keys (`auth.mode = keys`), virtual keys stored by
tenants (secrets sealed at rest), used by curl, the `openai` SDK and the `portkey-ai` SDK holding
only a gateway key — against the spec-checking fake OpenAI."""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from portkey_ai import Portkey
from tunegate.server.cli import main as cli_main
from tunegate.server.routing import DEFAULT_PROVIDERS, RoutingConfig

from tests.conftest import Gateway, start_gateway
from tests.e2e.providers import TRAINING
from tests.fakes import FakeOpenAI, start_fake_openai_in_thread

PROVIDER_KEY = "sk-canary-provider-secret-8c1f"
MODEL = "gpt-4o-mini-2024-07-18"


def cli(*args: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        cli_main(list(args))
    return out.getvalue()


def issue(data_dir: Path, tenant: str, name: str, *extra: str) -> str:
    """`tunegate keys create`: the key is alone on the last line."""
    return cli(
        "keys", "--data-dir", str(data_dir), "create", "--tenant", tenant, "--name", name, *extra
    ).splitlines()[-1]


@dataclass
class Stack:
    gateway: Gateway
    fake: FakeOpenAI
    data_dir: Path
    admin: str
    acme: str
    globex: str

    @property
    def url(self) -> str:
        return self.gateway.base_url

    def call(self, method: str, path: str, key: str | None, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if key is not None:
            headers["x-portkey-api-key"] = key
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=30, **kwargs)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    fake = start_fake_openai_in_thread(steps_per_get=0, api_keys={PROVIDER_KEY})
    data_dir = tmp_path_factory.mktemp("keys")
    admin = issue(data_dir, "ops", "root", "--admin")
    acme = issue(data_dir, "acme", "ci")
    globex = issue(data_dir, "globex", "ci")
    host = fake.base_url.removeprefix("http://").split("/")[0]
    gateway = start_gateway(
        data_dir,
        routing=RoutingConfig(providers=dict(DEFAULT_PROVIDERS), allowed_custom_hosts=(host,)),
        auth_mode="keys",
        reconcile_grace_seconds=0.0,
    )
    yield Stack(gateway, fake, data_dir, admin, acme, globex)
    gateway.close()
    fake.close()


def make_virtual_key(stack: Stack, key: str, slug: str) -> dict[str, Any]:
    answer = stack.call(
        "POST",
        "/virtual-keys",
        key,
        json={
            "slug": slug,
            "provider": "openai",
            "key": PROVIDER_KEY,
            "options": {"custom_host": stack.fake.base_url},
        },
    )
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def upload(stack: Stack, key: str) -> str:
    answer = stack.call(
        "POST", "/files", key, files={"file": ("t.jsonl", TRAINING)}, data={"purpose": "fine-tune"}
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["id"])


def test_the_readme_curl_verbatim_creates_a_job_with_only_a_gateway_key(stack: Stack) -> None:
    created = make_virtual_key(stack, stack.acme, "acme-openai")
    assert created["object"] == "virtual_key" and created["key"] == "****" + PROVIDER_KEY[-4:]
    assert PROVIDER_KEY not in json.dumps(created)
    file_id = upload(stack, stack.acme)
    job = stack.call(
        "POST",
        "/fine_tuning/jobs",
        stack.acme,
        headers={"Content-Type": "application/json"},
        content=json.dumps(
            {
                "model": MODEL,
                "suffix": "gw",
                "training_file": file_id,
                "portkey_options": {"x-portkey-virtual-key": "acme-openai"},
                "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1}}},
            }
        ),
    )
    assert job.status_code == 200, job.text
    body = job.json()
    assert body["id"].startswith("ftjob-") and body["training_file"] == file_id
    assert len(stack.fake.jobs) >= 1 and stack.fake.violations == []
    # A follow-up carries no provider headers: the stored key rebuilds the account.
    again = stack.call("GET", f"/fine_tuning/jobs/{body['id']}", stack.acme)
    assert again.status_code == 200 and again.json()["id"] == body["id"]


def test_the_sdks_with_a_gateway_key_and_a_virtual_key(stack: Stack) -> None:
    make_virtual_key(stack, stack.acme, "acme-sdk")
    sdk = openai.OpenAI(
        base_url=stack.url,
        api_key=stack.acme,
        default_headers={"x-portkey-virtual-key": "acme-sdk"},
        max_retries=0,
    )
    file_id = sdk.files.create(file=("t.jsonl", TRAINING), purpose="fine-tune").id
    job = sdk.fine_tuning.jobs.create(model=MODEL, training_file=file_id)
    assert sdk.fine_tuning.jobs.retrieve(job.id).id == job.id
    portkey = Portkey(base_url=stack.url, api_key=stack.acme, virtual_key="acme-sdk")
    listed = portkey.fine_tuning.jobs.list(limit=100)
    assert job.id in [j.id for j in listed.data or []]
    assert stack.fake.violations == []


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/files"),
        ("GET", "/fine_tuning/jobs"),
        ("GET", "/models"),
        ("GET", "/virtual-keys"),
        ("GET", "/api-keys"),
        ("POST", "/fine_tuning/jobs"),
    ],
)
def test_keys_mode_refuses_missing_unknown_revoked_and_expired_keys(
    stack: Stack, method: str, path: str
) -> None:
    revoked = issue(stack.data_dir, "acme", "old")
    key_id = revoked.split("_")[1]
    cli("keys", "--data-dir", str(stack.data_dir), "revoke", key_id)
    expires_at = int(time.time()) + 2  # whole seconds: in the future when issued, past after the wait
    expired = issue(stack.data_dir, "acme", "short", "--expires-at", str(expires_at))
    time.sleep(max(0.0, expires_at - time.time()) + 0.05)
    fake_key = "tgk_0123456789ab_" + "A" * 43
    for key in (None, "not-a-key", fake_key, revoked, expired):
        answer = stack.call(method, path, key, json={} if method == "POST" else None)
        assert answer.status_code == 401, (key, answer.text)
        error = answer.json()["error"]
        assert error["code"] == "invalid_api_key"
        assert "acme" not in error["message"] and "globex" not in error["message"]
    # The openai SDK with a bad key as its api_key: 401 as OpenAI answers it.
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=stack.url, api_key=fake_key, max_retries=0).files.list()


def test_only_admin_keys_manage_keys(stack: Stack) -> None:
    assert stack.call("GET", "/api-keys", stack.acme).status_code == 403
    made = stack.call("POST", "/api-keys", stack.admin, json={"tenant": "initech", "name": "ci"})
    assert made.status_code == 200, made.text
    key = made.json()["key"]
    assert key.startswith("tgk_") and made.json()["role"] == "tenant"
    listed = stack.call("GET", "/api-keys", stack.admin, params={"tenant": "initech"}).json()["data"]
    assert [k["id"] for k in listed] == [made.json()["id"]] and "key" not in listed[0]
    assert stack.call("GET", "/files", key).status_code == 200
    assert stack.call("DELETE", f"/api-keys/{made.json()['id']}", stack.admin).status_code == 200
    assert stack.call("GET", "/files", key).status_code == 401


def test_a_tenant_never_sees_or_uses_another_tenants_keys_files_or_jobs(stack: Stack) -> None:
    make_virtual_key(stack, stack.acme, "acme-private")
    file_id = upload(stack, stack.acme)
    assert stack.call("GET", "/virtual-keys/acme-private", stack.globex).status_code == 404
    assert "acme-private" not in json.dumps(stack.call("GET", "/virtual-keys", stack.globex).json())
    assert stack.call("DELETE", "/virtual-keys/acme-private", stack.globex).status_code == 404
    used = stack.call(
        "POST",
        "/fine_tuning/jobs",
        stack.globex,
        headers={"x-portkey-virtual-key": "acme-private"},
        json={"model": MODEL, "training_file": file_id},
    )
    assert used.status_code == 400 and used.json()["error"]["code"] == "unknown_virtual_key"
    assert stack.call("GET", f"/files/{file_id}", stack.globex).status_code == 404
    acme_jobs = {j["id"] for j in stack.call("GET", "/fine_tuning/jobs", stack.acme).json()["data"]}
    globex_jobs = {j["id"] for j in stack.call("GET", "/fine_tuning/jobs", stack.globex).json()["data"]}
    assert not acme_jobs & globex_jobs


def test_update_and_delete_a_virtual_key(stack: Stack) -> None:
    make_virtual_key(stack, stack.acme, "acme-rotating")
    updated = stack.call(
        "PUT",
        "/virtual-keys/acme-rotating",
        stack.acme,
        json={
            "provider": "openai",
            "key": "sk-new-secret-0000",
            "options": {"custom_host": stack.fake.base_url},
        },
    )
    assert updated.status_code == 200 and updated.json()["key"] == "****0000"
    bad = stack.call(
        "POST",
        "/virtual-keys",
        stack.acme,
        json={"slug": "x", "provider": "openai", "key": "k", "options": {"custom_host": "http://10.1.2.3"}},
    )
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "custom_host_not_allowed"
    assert stack.call("DELETE", "/virtual-keys/acme-rotating", stack.acme).json() == {
        "object": "virtual_key",
        "slug": "acme-rotating",
        "deleted": True,
    }
    assert stack.call("GET", "/virtual-keys/acme-rotating", stack.acme).status_code == 404


def test_secrets_are_absent_from_the_database_file(stack: Stack) -> None:
    make_virtual_key(stack, stack.acme, "acme-canary")
    hook = stack.call("POST", "/webhook-endpoints", stack.acme, json={"url": "https://hooks.example.com/tg"})
    assert hook.status_code == 200, hook.text
    whsec = hook.json()["secret"]
    assert whsec.startswith("whsec_")
    for path in stack.data_dir.glob("tunegate.db*"):
        raw = path.read_bytes()
        assert PROVIDER_KEY.encode() not in raw
        assert whsec.encode() not in raw and whsec.removeprefix("whsec_").encode() not in raw
        for key in (stack.admin, stack.acme, stack.globex):
            assert key.encode() not in raw and key.split("_", 2)[2].encode() not in raw


def test_every_route_refuses_a_call_without_a_live_key(stack: Stack) -> None:
    """Every REST route (enumerated from the protos) and every gRPC service answers 401 /
    UNAUTHENTICATED without a key and with a revoked one, before touching anything."""
    import re

    import grpc
    from tunegate.v1 import files_pb2, files_pb2_grpc

    from tests.reliability.test_ownership_sweep import rest_routes

    revoked = issue(stack.data_dir, "acme", "gone")
    cli("keys", "--data-dir", str(stack.data_dir), "revoke", revoked.split("_")[1])
    routes = rest_routes()
    assert len(routes) > 30
    for verb, template in sorted(routes):
        path = re.sub(r"\{[^}]+\}", "x-1", template).removeprefix("/v1")
        for key in (None, revoked):
            body: dict[str, Any] = {"json": {}} if verb in ("POST", "PUT") else {}
            if template in ("/v1/files", "/v1/uploads/{upload_id}/parts") and verb == "POST":
                body = {
                    "files": {"file": ("t.jsonl", b"{}\n"), "data": ("d", b"{}\n")},
                    "data": {"purpose": "batch"},
                }
            answer = stack.call(verb, path, key, **body)
            assert answer.status_code == 401, (verb, path, key is not None, answer.text[:200])
    target = stack.gateway.grpc_target
    with grpc.insecure_channel(target) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            files_pb2_grpc.FilesStub(channel).ListFiles(files_pb2.ListFilesRequest(), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        listed = files_pb2_grpc.FilesStub(channel).ListFiles(
            files_pb2.ListFilesRequest(), metadata=(("x-portkey-api-key", stack.acme),), timeout=10
        )
        assert isinstance(listed, files_pb2.ListFilesResponse)  # the same call with a live key
