"""The web console (`GET /console`) in a real headless browser: Debian's Chromium driven by
Playwright, against a real gateway on 127.0.0.1 whose `local` provider trains for real.

The walk-through is the README's promise: upload a file, start a job on `tunegate-tiny`, watch
its events arrive and its loss chart drawn until it succeeds, chat with the tuned model beside
its base model, cancel a second job. Every page is also checked at 360 px wide, by keyboard,
and with `auth = keys`, where nothing but the sign-in form shows without a key. Screenshots go
to `build/console-screenshots/` for a person to look at; the browser's console must stay free
of errors (the sign-in test allows exactly the 401 it provokes).

Chromium comes from Debian (`apt-get install chromium`); `.ci/run` installs it. Without it the
tests are skipped with a reason, unless `TUNEGATE_REQUIRE_BROWSER=1` (set by `.ci/run`) makes
that a failure.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser as Chromium
from playwright.sync_api import FloatRect, Locator, Page, sync_playwright
from tunegate.server.cli import main as cli_main

from tests.conftest import Gateway, start_gateway

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "build" / "console-screenshots"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    if os.environ.get("TUNEGATE_REQUIRE_BROWSER"):
        raise RuntimeError("TUNEGATE_REQUIRE_BROWSER is set but Chromium is not installed")
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)


def _training_lines(count: int = 12) -> str:
    """The README quickstart's kind of file: tiny chat examples that all answer one word."""
    lines = [
        {
            "messages": [
                {"role": "user", "content": f"Say the magic word #{i}"},
                {"role": "assistant", "content": "abracadabra"},
            ]
        }
        for i in range(count)
    ]
    return "".join(json.dumps(line) + "\n" for line in lines)


@dataclass
class Browser:
    """One Chromium for the module; each test opens its own pages (and its own tab storage)."""

    instance: Chromium
    errors: list[str] = field(default_factory=list)

    def page(self, width: int = 1280, height: int = 900) -> Page:
        page = self.instance.new_page(viewport={"width": width, "height": height})
        page.on("console", lambda msg: self.errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        page.on("dialog", lambda dialog: dialog.accept())
        page.set_default_timeout(30_000)
        return page


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield Browser(chromium)
        chromium.close()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = start_gateway(
        tmp_path_factory.mktemp("console"),
        in_process=True,
        local_concurrency=2,
        local_train_threads=1,
        watch_poll_seconds=0.25,
    )
    yield gw
    gw.close()


def _keys(data_dir: Path, *args: str) -> str:
    """`tunegate keys …`, its output (in a thread: Playwright's sync API keeps an event loop
    running in this one)."""
    out = io.StringIO()

    def run() -> None:
        with contextlib.redirect_stdout(out):
            cli_main(["keys", "--data-dir", str(data_dir), *args])

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    return out.getvalue()


def _console(gateway: Gateway) -> str:
    return gateway.base_url.removesuffix("/v1") + "/console"


def _shot(page: Page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _connect(page: Page, gateway: Gateway, key: str) -> None:
    """Opens the console and sets the API key on its Connection page, as a user would."""
    page.goto(_console(gateway))
    page.get_by_role("link", name="Connection").click()
    page.get_by_label("API key", exact=True).fill(key)
    page.get_by_role("button", name="Save").click()
    page.get_by_role("heading", name="Connection").wait_for()


def _option(page: Page, select: str, filename: str) -> str:
    return page.locator(f"{select} option", has_text=filename).first.inner_text()


def _start_job(page: Page, filename: str, epochs: int, suffix: str, validation: str | None = None) -> str:
    page.get_by_role("link", name="Jobs", exact=True).click()
    page.get_by_role("heading", name="Start a job").wait_for()
    page.get_by_label("Base model").fill("tunegate-tiny")
    page.get_by_label("Training file").select_option(label=_option(page, "#job-training", filename))
    if validation is not None:
        choice = _option(page, "#job-validation", validation)
        page.get_by_label("Validation file (optional)").select_option(label=choice)
    page.get_by_label("Suffix (optional)").fill(suffix)
    page.get_by_label("Epochs (optional)").fill(str(epochs))
    page.get_by_role("button", name="Start job").click()
    page.wait_for_function("() => location.hash.startsWith('#/jobs/ftjob-')")
    return str(page.evaluate("location.hash")).rsplit("/", 1)[-1]


def _ids(rows: Locator) -> list[str]:
    return list(rows.evaluate_all("(rows) => rows.map((row) => row.dataset.id)"))


def _event_count(page: Page) -> int:
    return int(page.locator("#events li").count())


def test_a_newcomer_uploads_trains_watches_and_chats(
    browser: Browser, gateway: Gateway, api_key: str, tmp_path: Path
) -> None:
    errors_before = len(browser.errors)
    page = browser.page()
    _connect(page, gateway, api_key)

    # Files: upload with a progress bar, then the file is listed.
    page.get_by_role("link", name="Files").click()
    training = tmp_path / "train.jsonl"
    training.write_text(_training_lines(60))
    page.get_by_label("File", exact=True).set_input_files(str(training))
    page.get_by_role("button", name="Upload").click()
    page.get_by_text("Uploaded train.jsonl as").wait_for()
    assert page.locator("#upload-progress").get_attribute("value") == "100"
    row = page.locator("#file-list tr", has_text="train.jsonl")
    row.wait_for()
    validation = tmp_path / "valid.jsonl"
    validation.write_text(_training_lines(12))
    page.get_by_label("File", exact=True).set_input_files(str(validation))
    page.get_by_role("button", name="Upload").click()
    page.get_by_text("Uploaded valid.jsonl as").wait_for()
    page.locator("#file-list tr", has_text="valid.jsonl").wait_for()
    listed = httpx.get(f"{gateway.base_url}/files", headers={"Authorization": f"Bearer {api_key}"}).json()
    assert [f["filename"] for f in listed["data"]] == ["valid.jsonl", "train.jsonl"]
    _shot(page, "files")

    # Jobs: start one long enough to watch (1,800 steps: about ten seconds of training).
    job_id = _start_job(page, "train.jsonl", epochs=30, suffix="magic", validation="valid.jsonl")
    page.get_by_role("heading", name=f"Job {job_id}").wait_for()
    page.wait_for_function("() => document.querySelectorAll('#events li').length > 0")
    page.wait_for_selector("main[data-status=running]", timeout=60_000)
    seen_running = _event_count(page)
    page.wait_for_selector("#loss-chart")  # drawn from the metrics events while it trains
    page.wait_for_selector("main[data-status=succeeded]", timeout=180_000)
    page.get_by_text("no more events will come").wait_for()
    assert _event_count(page) > seen_running  # the list grew while the page watched
    messages = page.locator("#events li").all_inner_texts()
    assert any("The job has successfully completed" in m for m in messages)

    # The chart: training loss per step, from events, checkpoints and the result file.
    page.wait_for_selector("#result-files li")
    points = page.locator("#loss-chart .series-train polyline").get_attribute("points") or ""
    steps = [tuple(map(float, p.split(","))) for p in points.split()]
    assert len(steps) >= 10
    assert steps[-1][1] > steps[0][1]  # SVG y grows downwards: the loss fell
    label = page.locator("#loss-chart").get_attribute("aria-label") or ""
    assert label.startswith("Loss per step. Training loss:")
    valid = page.locator("#loss-chart .series-valid polyline").get_attribute("points") or ""
    assert len(valid.split()) >= 2  # validation loss, dashed, from the metrics and checkpoints
    assert "Validation loss:" in label
    assert page.locator("#accuracy-chart .series-train polyline").count() == 1
    assert page.locator("#accuracy-chart .series-valid polyline").count() == 1
    assert page.locator("#checkpoints tbody tr").count() >= 1
    with page.expect_download() as downloaded:
        page.get_by_role("button", name="Download step_metrics.csv").click()
    assert downloaded.value.suggested_filename == "step_metrics.csv"
    with open(downloaded.value.path(), newline="") as result:
        metrics = list(csv.DictReader(result))
    assert [int(row["step"]) for row in metrics] == list(range(1, len(steps) + 1))
    _shot(page, "job")
    top: FloatRect = {"x": 0, "y": 0, "width": 1280, "height": 1500}
    page.screenshot(path=str(SHOTS / "job-top.png"), clip=top, full_page=True)  # the README's picture
    page.get_by_text("The numbers").click()  # the chart's data as a table, for those who cannot see it
    assert page.locator("#chart details tbody tr").count() == len(steps)

    # The playground: the tuned model beside its base model, streamed.
    page.get_by_role("link", name="Try it in the playground").click()
    page.get_by_role("heading", name="Playground").wait_for()
    tuned = page.get_by_label("Model", exact=True).input_value()
    assert tuned.startswith("ft:tunegate-tiny:local:magic:")
    assert page.get_by_label("Compare with (optional)").input_value() == "tunegate-tiny"
    page.get_by_label("System prompt (optional)").fill("You say the magic word.")
    page.get_by_label("Message").fill("Say the magic word #3")
    page.get_by_role("button", name="Send").click()
    page.wait_for_function(
        "() => document.querySelectorAll('.answer').length === 2 && "
        "![...document.querySelectorAll('.answer')].some((a) => a.hasAttribute('aria-busy'))"
    )
    answers = page.locator(".column .answer").all_inner_texts()
    assert len(answers) == 2 and all(a.strip() for a in answers)
    assert page.locator(".column .error").count() == 0
    assert answers[0] != answers[1]  # trained, it no longer answers as its base does
    _shot(page, "playground")

    # A second job, paused, resumed and cancelled from its page.
    second = _start_job(page, "train.jsonl", epochs=50, suffix="long")
    page.wait_for_selector("main[data-status=running]", timeout=60_000)
    page.get_by_role("button", name="Pause").click()
    page.wait_for_selector("main[data-status=paused]", timeout=60_000)
    page.get_by_role("button", name="Resume").click()
    page.wait_for_selector("main[data-status=running]", timeout=60_000)
    page.get_by_role("button", name="Cancel job").click()
    page.wait_for_selector("main[data-status=cancelled]", timeout=60_000)
    auth = {"Authorization": f"Bearer {api_key}"}
    job = httpx.get(f"{gateway.base_url}/fine_tuning/jobs/{second}", headers=auth)
    assert job.json()["status"] == "cancelled"

    # The list shows both, with provider and base model, and filters by status and provider.
    page.get_by_role("link", name="Jobs", exact=True).click()
    page.locator("#job-list tbody tr").nth(1).wait_for()
    assert page.locator("#job-list tbody tr").count() == 2
    rows = page.locator("#job-list tbody tr").all_inner_texts()
    assert all("local" in r and "tunegate-tiny" in r for r in rows)
    listed = page.locator("#job-list tbody tr")
    assert _ids(listed) == [second, job_id]  # newest first
    page.get_by_label("Status").select_option("cancelled")
    assert _ids(listed) == [second]
    page.get_by_label("Provider").select_option("local")
    assert _ids(listed) == [second]
    page.get_by_label("Status").select_option("")
    assert _ids(listed) == [second, job_id]
    _shot(page, "jobs")
    page.close()
    assert browser.errors[errors_before:] == []


def test_pages_fit_360_px_and_work_by_keyboard(
    browser: Browser, gateway: Gateway, api_key: str, tmp_path: Path
) -> None:
    errors_before = len(browser.errors)
    page = browser.page(width=360, height=740)
    _connect(page, gateway, api_key)
    for name in ("Files", "Jobs", "Playground", "Connection"):
        page.get_by_role("link", name=name, exact=True).click()
        page.locator("main h1").first.wait_for()
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 360, f"{name} is {width} px wide at a 360 px viewport"
        _shot(page, f"narrow-{name.lower()}")

    # Keyboard only: the skip link comes first, then the navigation; Enter follows a link.
    page.goto(_console(gateway) + "#/jobs")
    page.reload()  # a fresh load: the focus starts at the top of the page
    page.get_by_role("heading", name="Fine-tuning jobs").wait_for()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Files"
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="Files", exact=True).wait_for()
    assert page.evaluate("location.hash") == "#/files"
    # The upload form is reachable and usable without a mouse.
    page.get_by_label("File", exact=True).focus()
    training = tmp_path / "keyboard.jsonl"
    training.write_text(_training_lines())
    page.get_by_label("File", exact=True).set_input_files(str(training))
    page.get_by_role("button", name="Upload").focus()
    page.keyboard.press("Enter")
    page.get_by_text("Uploaded keyboard.jsonl as").wait_for()

    # A job's page fits too, chart and tables included.
    auth = {"Authorization": f"Bearer {api_key}"}
    (file,) = httpx.get(f"{gateway.base_url}/files", headers=auth).json()["data"]
    body = {"model": "tunegate-tiny", "training_file": file["id"], "hyperparameters": {"n_epochs": 1}}
    job = httpx.post(f"{gateway.base_url}/fine_tuning/jobs", json=body, headers=auth).json()
    page.goto(_console(gateway) + f"#/jobs/{job['id']}")
    page.wait_for_selector("main[data-status=succeeded]", timeout=120_000)
    page.wait_for_selector("#result-files li")
    page.wait_for_selector("#loss-chart")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 360, f"the job page is {width} px wide at a 360 px viewport"
    _shot(page, "narrow-job")
    page.close()
    assert browser.errors[errors_before:] == []


def test_a_file_larger_than_a_part_goes_up_through_the_uploads_api(
    browser: Browser, gateway: Gateway, api_key: str, tmp_path: Path
) -> None:
    """Over 64 MiB (one part), the console uses `/v1/uploads`: two parts here, then `complete`;
    the stored file is byte for byte the one chosen."""
    errors_before = len(browser.errors)
    line = (
        json.dumps(
            {"messages": [{"role": "user", "content": "x" * 60}, {"role": "assistant", "content": "y"}]}
        )
        + "\n"
    ).encode()
    big = tmp_path / "big.jsonl"
    big.write_bytes(line * (70 * 1024 * 1024 // len(line)))
    page = browser.page()
    calls: list[str] = []
    page.on("request", lambda request: calls.append(f"{request.method} {request.url.split('/v1', 1)[-1]}"))
    _connect(page, gateway, api_key)
    page.get_by_role("link", name="Files").click()
    page.get_by_label("File", exact=True).set_input_files(str(big))
    page.get_by_role("button", name="Upload").click()
    page.get_by_text("Uploaded big.jsonl as").wait_for(timeout=120_000)
    uploads = [c for c in calls if c.startswith("POST /uploads")]
    assert [c.rsplit("/", 1)[-1] if c.count("/") > 1 else c for c in uploads] == [
        "POST /uploads",
        "parts",
        "parts",
        "complete",
    ]
    assert not [c for c in calls if c == "POST /files"]
    auth = {"Authorization": f"Bearer {api_key}"}
    (stored,) = httpx.get(f"{gateway.base_url}/files", headers=auth).json()["data"]
    assert stored["bytes"] == big.stat().st_size and stored["purpose"] == "fine-tune"
    content = httpx.get(f"{gateway.base_url}/files/{stored['id']}/content", headers=auth, timeout=60)
    assert hashlib.sha256(content.content).digest() == hashlib.sha256(big.read_bytes()).digest()
    page.close()
    assert browser.errors[errors_before:] == []


def test_with_auth_keys_only_the_sign_in_form_shows_without_a_key(
    browser: Browser, tmp_path_factory: pytest.TempPathFactory
) -> None:
    data_dir = tmp_path_factory.mktemp("console-keys")
    key = _keys(data_dir, "create", "--tenant", "acme", "--name", "console").splitlines()[-1]
    gw = start_gateway(data_dir, auth_mode="keys")
    try:
        errors_before = len(browser.errors)
        page = browser.page()
        page.goto(_console(gw))
        page.get_by_role("heading", name="Sign in").wait_for()
        assert page.locator("#nav").is_hidden()
        assert page.locator("main h1").all_inner_texts() == ["Sign in"]
        assert page.locator("main table, main #job-list, main #file-list").count() == 0
        # A wrong key is refused with the gateway's own message, and still nothing else shows.
        page.get_by_label("API key", exact=True).fill("tgk_wrong_wrong")
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("alert").wait_for()
        assert "API key" in page.get_by_role("alert").inner_text()
        assert page.locator("#nav").is_hidden()
        _shot(page, "sign-in")
        # The right key opens the console; it lives in this tab only.
        page.get_by_label("API key", exact=True).fill(key)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("heading", name="Fine-tuning jobs").wait_for()
        assert page.locator("#nav").is_visible()
        assert key in page.evaluate("JSON.stringify(sessionStorage)")
        assert page.evaluate("JSON.stringify(localStorage)") == "{}"
        # Once the key is revoked, the next call brings the sign-in form back.
        _keys(data_dir, "revoke", key.split("_")[1])
        page.get_by_role("link", name="Files").click()
        page.get_by_role("heading", name="Sign in").wait_for()
        assert page.locator("#nav").is_hidden()
        page.close()
        # A new tab knows no key: the sign-in form again.
        other = browser.page()
        other.goto(_console(gw))
        other.get_by_role("heading", name="Sign in").wait_for()
        other.close()
        unexpected = [e for e in browser.errors[errors_before:] if "status of 401" not in e]
        assert unexpected == []
    finally:
        gw.close()


def test_console_files_are_served_with_cache_validators_and_a_strict_policy(gateway: Gateway) -> None:
    base = gateway.base_url.removesuffix("/v1")
    page = httpx.get(f"{base}/console")
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert '<script type="module" src="/console/console.js">' in page.text
    again = httpx.get(f"{base}/console/", headers={"If-None-Match": page.headers["etag"]})
    assert again.status_code == 304
    script = httpx.get(f"{base}/console/console.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    missing = httpx.get(f"{base}/console/nope.js")
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == "No such console file: nope.js"
    assert httpx.get(f"{base}/console/..%2Fopenapi.json").status_code == 404
    head = httpx.head(f"{base}/console/console.css")
    assert head.status_code == 200 and head.content == b""
